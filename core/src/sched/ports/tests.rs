use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

fn range(begin: u16, end: u16) -> PortRange {
    PortRange { begin, end }
}

#[test]
fn ranges_are_merged_and_counted() {
    let p = NodePorts::new(&[range(20, 29), range(10, 19), range(25, 40), range(50, 49)]);
    assert_eq!(p.ranges(), &[range(10, 40)]);
    assert_eq!(p.free(), 31);
    assert_eq!(NodePorts::default().free(), 0);
}

#[test]
fn fit_is_decided_by_fixed_ports_held_and_free_ports_left() {
    let mut p = NodePorts::new(&[range(100, 102)]);
    assert_eq!(p.take(&[Some(9090)]), Ok(vec![9090]));
    assert_eq!(
        p.free(),
        3,
        "a fixed port outside the ranges takes none of them"
    );
    for (need, want) in [
        (vec![None, None, None], Ok(())),
        (
            vec![None, None, None, None],
            Err(PortMiss::Exhausted { needed: 4, free: 3 }),
        ),
        (vec![Some(9090)], Err(PortMiss::Taken(9090))),
        (vec![None, Some(9090)], Err(PortMiss::Taken(9090))),
        // A fixed port in the ranges leaves one fewer to assign.
        (vec![Some(101), None, None], Ok(())),
        (
            vec![Some(101), None, None, None],
            Err(PortMiss::Exhausted { needed: 3, free: 2 }),
        ),
        (vec![], Ok(())),
    ] {
        assert_eq!(p.check(&need), want, "{need:?}");
    }
}

#[test]
fn assignment_goes_on_from_the_last_port_given_and_wraps() {
    let mut p = NodePorts::new(&[range(100, 102), range(200, 200)]);
    assert_eq!(p.take(&[None, Some(101)]), Ok(vec![100, 101]));
    assert_eq!(p.take(&[None]), Ok(vec![102]));
    p.release(&[100]);
    // 100 was just given back: 200 comes first.
    assert_eq!(p.take(&[None]), Ok(vec![200]));
    assert_eq!(p.take(&[None]), Ok(vec![100]));
    assert_eq!(p.free(), 0);
    assert_eq!(
        p.take(&[None]),
        Err(PortMiss::Exhausted { needed: 1, free: 0 })
    );
}

#[test]
fn a_failed_take_holds_nothing() {
    let mut p = NodePorts::new(&[range(100, 101)]);
    assert_eq!(p.take(&[Some(5)]), Ok(vec![5]));
    let before = p.clone();
    assert!(p.take(&[Some(6), None, None, None]).is_err());
    assert!(p.take(&[Some(7), Some(5)]).is_err());
    assert_eq!(p, before);
}

#[test]
fn reoffered_ranges_keep_held_ports() {
    let mut p = NodePorts::new(&[range(100, 109)]);
    let held = p.take(&[None, None, Some(105)]).expect("they fit");
    let q = p.reoffered(&[range(100, 104)]);
    assert_eq!(q.free(), 3, "100 and 101 are held");
    assert!(held.iter().all(|&h| q.is_used(h)));
    assert_eq!(q.check(&[Some(105)]), Err(PortMiss::Taken(105)));
}

proptest! {
    /// Tasks come and go: no port is ever held by two of them, every
    /// assigned port lies in the ranges, fixed ports are as asked, the free
    /// count is exact, and a take fails only when the check says so.
    #[test]
    fn no_port_is_held_twice(
        ranges in prop::collection::vec((1u16..60, 0u16..8), 1..4),
        ops in prop::collection::vec(
            (any::<bool>(), prop::collection::vec(prop::option::weighted(0.3, 1u16..80), 0..4), any::<prop::sample::Index>()),
            1..80,
        ),
    ) {
        let ranges: Vec<PortRange> = ranges.iter().map(|&(b, l)| range(b, b + l)).collect();
        let mut p = NodePorts::new(&ranges);
        let mut live: Vec<Vec<u16>> = Vec::new();
        for (add, need, pick) in ops {
            if add || live.is_empty() {
                let checked = p.check(&need);
                match p.take(&need) {
                    Ok(got) => {
                        prop_assert!(checked.is_ok());
                        prop_assert_eq!(got.len(), need.len());
                        for (n, g) in need.iter().zip(&got) {
                            match n {
                                Some(f) => prop_assert_eq!(f, g),
                                None => prop_assert!(ranges.iter().any(|r| r.contains(*g))),
                            }
                        }
                        live.push(got);
                    }
                    Err(e) => prop_assert_eq!(checked, Err(e)),
                }
            } else {
                let gone = live.swap_remove(pick.index(live.len()));
                p.release(&gone);
            }
            let mut seen = BTreeSet::new();
            for port in live.iter().flatten() {
                prop_assert!(seen.insert(*port), "port {} held twice", port);
                prop_assert!(p.is_used(*port));
            }
            let in_ranges = |x: u16| ranges.iter().any(|r| r.contains(x));
            let offered: BTreeSet<u16> = ranges.iter().flat_map(|r| r.begin..=r.end).collect();
            let free = offered.iter().filter(|&&x| !seen.contains(&x)).count() as u32;
            prop_assert_eq!(p.free(), free);
            prop_assert!(seen.iter().all(|&x| in_ranges(x) || x < 80));
        }
    }
}
