use proptest::prelude::*;

use super::*;

fn member(
    task: &str,
    address: &str,
    ports: &[(&str, u16)],
    serving: bool,
    terminating: bool,
) -> Member {
    Member {
        task: task.into(),
        uid: Some(format!("uid-{task}")),
        node: "n1".into(),
        address: address.into(),
        ports: ports
            .iter()
            .map(|(n, p)| TaskPort {
                name: (*n).into(),
                port: *p,
            })
            .collect(),
        serving,
        terminating,
    }
}

#[test]
fn tasks_are_grouped_by_their_ports_and_ready_only_when_serving_and_not_terminating() {
    let out = slices(
        "web",
        vec![
            member("web-1", "10.0.0.2", &[("http", 31001)], true, false),
            member("web-0", "10.0.0.1", &[("http", 31000)], true, false),
            member("web-2", "10.0.0.1", &[("http", 31000)], false, false),
            member("web-3", "10.0.0.3", &[("http", 31000)], true, true),
            member("web-4", "node-a.local", &[("http", 31000)], true, false),
        ],
    );
    let shape: Vec<(&str, Vec<(&str, bool)>)> = out
        .iter()
        .map(|s| {
            (
                s.address_type.as_str(),
                s.endpoints
                    .iter()
                    .map(|e| (e.member.task.as_str(), e.ready))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (
                "IPv4",
                vec![("web-0", true), ("web-2", false), ("web-3", false)]
            ),
            ("IPv4", vec![("web-1", true)]),
            ("FQDN", vec![("web-4", true)]),
        ]
    );
    assert!(
        out.iter()
            .all(|s| s.name.starts_with("web-") && s.name.len() == 12)
    );
    assert_ne!(out[0].name, out[1].name);
    assert!(slices("web", Vec::new()).is_empty());
}

#[test]
fn a_large_group_is_split_into_slices_of_at_most_a_hundred() {
    let members: Vec<Member> = (0..250)
        .map(|i| member(&format!("t{i:03}"), "10.0.0.1", &[], true, false))
        .collect();
    let out = slices("batch", members);
    let sizes: Vec<usize> = out.iter().map(|s| s.endpoints.len()).collect();
    assert_eq!(sizes, vec![100, 100, 50]);
    let base = out[0].name.clone();
    assert_eq!(out[1].name, format!("{base}-1"));
    assert_eq!(out[2].name, format!("{base}-2"));
}

proptest! {
    /// Whatever the order tasks come in, the slices are the same; every
    /// task is in exactly one, with the ports of its slice, none over the
    /// limit, and no two slices share a name.
    #[test]
    fn slices_are_a_partition_decided_by_the_tasks_alone(
        tasks in prop::collection::vec((0u8..4, 0u16..3, any::<bool>(), any::<bool>()), 0..260),
        seed in any::<u64>(),
    ) {
        let members: Vec<Member> = tasks
            .iter()
            .enumerate()
            .map(|(i, (addr, port, serving, terminating))| {
                let address = ["10.0.0.1", "10.0.0.2", "fd00::1", "n.local"][*addr as usize];
                let ports: Vec<(&str, u16)> = if *port == 0 { vec![] } else { vec![("http", 31000 + port)] };
                member(&format!("t{i}"), address, &ports, *serving, *terminating)
            })
            .collect();
        let mut shuffled = members.clone();
        let mut state = seed;
        for i in (1..shuffled.len()).rev() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (state >> 33) as usize % (i + 1));
        }
        let a = slices("job", members.clone());
        prop_assert_eq!(&a, &slices("job", shuffled));
        let mut seen = std::collections::BTreeSet::new();
        let names: std::collections::BTreeSet<&str> = a.iter().map(|s| s.name.as_str()).collect();
        prop_assert_eq!(names.len(), a.len());
        for s in &a {
            prop_assert!(!s.endpoints.is_empty() && s.endpoints.len() <= MAX_PER_SLICE);
            for e in &s.endpoints {
                prop_assert!(seen.insert(e.member.task.clone()));
                prop_assert_eq!(&e.member.ports, &s.ports);
                prop_assert_eq!(AddressType::of(&e.member.address), s.address_type);
                prop_assert_eq!(e.ready, e.member.serving && !e.member.terminating);
            }
        }
        prop_assert_eq!(seen.len(), members.len());
    }
}
