//! Scheduler rules as tables built with small builders, the talk's two
//! stories, and property tests for the invariants.

use corral_api::Tier;
use corral_api::job::{AttributeConstraint, ConstraintOperator, Constraints};
use corral_api::node::RuntimeKind;
use corral_api::task::PendingReasonKind;

use super::preempt::{self, Rule, Rules};
use super::*;

const GI: i64 = 1 << 30;

fn at(s: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_800_000_000 + s).expect("time")
}

/// A task builder: `TaskB::new("t").role("ads").cpus(2).tier(Tier::Preferred)`.
#[derive(Clone)]
struct TaskB(SchedTask);

impl TaskB {
    fn new(name: &str) -> Self {
        TaskB(SchedTask {
            key: format!("default/{name}"),
            job: "default/job".into(),
            role: "ads".into(),
            request: Res::cpu_mem(1000, GI),
            tier: Tier::Preemptible,
            priority: 0,
            constraints: Constraints::default(),
            runtime: None,
            ports: Vec::new(),
            created: at(0),
            started: None,
            gang: None,
            long_running: false,
        })
    }
    fn role(mut self, r: &str) -> Self {
        self.0.role = r.into();
        self
    }
    fn job(mut self, j: &str) -> Self {
        self.0.job = format!("default/{j}");
        self
    }
    fn cpus(mut self, c: i64) -> Self {
        self.0.request.0[0] = c * 1000;
        self
    }
    fn mem_gi(mut self, g: i64) -> Self {
        self.0.request.0[1] = g * GI * 1000;
        self
    }
    fn tier(mut self, t: Tier) -> Self {
        self.0.tier = t;
        self
    }
    fn priority(mut self, p: i32) -> Self {
        self.0.priority = p;
        self
    }
    fn created(mut self, s: i64) -> Self {
        self.0.created = at(s);
        self
    }
    fn started(mut self, s: i64) -> Self {
        self.0.started = Some(at(s));
        self
    }
    fn host_limit(mut self, n: u32) -> Self {
        self.0.constraints.host_limit = Some(n);
        self
    }
    fn not_in(mut self, attr: &str, v: &str) -> Self {
        self.0.constraints.attributes.push(AttributeConstraint {
            name: attr.into(),
            operator: ConstraintOperator::NotIn,
            values: vec![v.into()],
        });
        self
    }
    fn runtime(mut self, r: RuntimeKind) -> Self {
        self.0.runtime = Some(r);
        self
    }
    fn ports(mut self, ports: &[Option<u16>]) -> Self {
        self.0.ports = ports.to_vec();
        self
    }
    fn t(self) -> SchedTask {
        self.0
    }
}

fn with_ports(mut n: NodeState, begin: u16, end: u16) -> NodeState {
    n.ports = super::ports::NodePorts::new(&[corral_api::ports::PortRange { begin, end }]);
    n
}

fn with_runtimes(mut n: NodeState, offered: &[RuntimeKind], default: RuntimeKind) -> NodeState {
    n.runtimes = Runtimes {
        offered: offered.to_vec(),
        default: Some(default),
    };
    n
}

fn node(name: &str, cpus: i64, mem_gi: i64) -> NodeState {
    NodeState::new(name, Res::cpu_mem(cpus * 1000, mem_gi * GI))
}

fn with_attr(mut n: NodeState, k: &str, v: &str) -> NodeState {
    n.attributes.insert(k.into(), v.into());
    n
}

fn cluster(nodes: Vec<NodeState>) -> Snapshot {
    let mut s = Snapshot::new();
    for n in nodes {
        s.upsert_node(n);
    }
    s
}

fn name(s: &Snapshot, id: NodeId) -> &str {
    &s.node(id).name
}

#[test]
fn bin_packing_picks_the_tightest_node_and_spread_the_emptiest() {
    let s = cluster(vec![
        node("big", 16, 64),
        node("small", 4, 16),
        node("mid", 8, 32),
    ]);
    let t = TaskB::new("t").cpus(2).t();
    assert_eq!(
        name(&s, place(&s, &t, Policy::BinPack).expect("placed")),
        "small"
    );
    assert_eq!(
        name(&s, place(&s, &t, Policy::Spread).expect("placed")),
        "big"
    );
}

#[test]
fn constraints_filter_nodes_and_are_explained() {
    let mut s = cluster(vec![
        with_attr(node("n1", 8, 32), "rack", "r1"),
        with_attr(node("n2", 8, 32), "rack", "r2"),
    ]);
    let t = TaskB::new("a").not_in("rack", "r1").host_limit(1).t();
    let id = place(&s, &t, Policy::BinPack).expect("placed");
    assert_eq!(name(&s, id), "n2");
    s.bind(t, id).expect("bind");
    // The second instance: r1 is excluded, n2 already has one.
    let t2 = TaskB::new("b").not_in("rack", "r1").host_limit(1).t();
    let Err(Unplaced::NoNode(f)) = place(&s, &t2, Policy::BinPack) else {
        panic!("should not fit")
    };
    assert_eq!(
        (f.nodes, f.attribute.clone(), f.host_limit),
        (2, vec![1], 1)
    );
    let e = explain(&s, &t2, &Unplaced::NoNode(f), at(5));
    assert!(
        e.summary.starts_with("pending: 0/2 nodes fit"),
        "{}",
        e.summary
    );
    assert_eq!(
        e.reasons.iter().map(|r| r.kind).collect::<Vec<_>>(),
        vec![
            PendingReasonKind::ConstraintFiltered,
            PendingReasonKind::ConstraintFiltered
        ]
    );
}

#[test]
fn a_task_runs_only_where_its_runtime_is_offered_and_never_falls_back() {
    use RuntimeKind::{Containerd, Process, Simulated};
    // Containers only; containers with host processes on request; a node
    // whose default (containerd) did not come up and offers processes only;
    // a simulated node, standing in for any runtime.
    let cases: &[(&[RuntimeKind], RuntimeKind, Option<RuntimeKind>, bool)] = &[
        (&[Containerd], Containerd, None, true),
        (&[Containerd], Containerd, Some(Containerd), true),
        (&[Containerd], Containerd, Some(Process), false),
        (&[Containerd, Process], Containerd, Some(Process), true),
        (&[Containerd, Process], Containerd, None, true),
        (&[Process], Containerd, None, false),
        (&[Process], Containerd, Some(Process), true),
        (&[Process], Process, None, true),
        (&[Process], Process, Some(Containerd), false),
        (&[Simulated], Simulated, Some(Process), true),
        (&[], Containerd, Some(Process), true),
    ];
    for (offered, default, wanted, fits) in cases {
        let s = cluster(vec![with_runtimes(node("n", 8, 32), offered, *default)]);
        let mut t = TaskB::new("t");
        if let Some(w) = wanted {
            t = t.runtime(*w);
        }
        let t = t.t();
        let placed = place(&s, &t, Policy::BinPack);
        assert_eq!(
            placed.is_ok(),
            *fits,
            "offered {offered:?}, default {default:?}, wanted {wanted:?}: {placed:?}"
        );
        if let Err(Unplaced::NoNode(f)) = &placed {
            assert_eq!(f.runtime, 1);
            let e = explain(&s, &t, &Unplaced::NoNode(f.clone()), at(5));
            let reason = e
                .reasons
                .iter()
                .find(|r| r.subject.as_deref() == Some("runtime"))
                .expect("a runtime reason");
            assert_eq!(reason.kind, PendingReasonKind::ConstraintFiltered);
            if let Some(w) = wanted {
                assert!(reason.message.contains(w.as_str()), "{}", reason.message);
            }
        }
    }
}

#[test]
fn reservations_serve_their_role_first_and_never_another() {
    let mut n1 = node("n1", 4, 16);
    n1.reserved
        .insert("analytics".into(), Res::cpu_mem(2000, 2 * GI));
    let mut s = cluster(vec![n1, node("n2", 4, 16)]);
    // analytics goes to its reservation even though n2 is equally tight.
    let a = TaskB::new("a").role("analytics").cpus(2).mem_gi(2).t();
    let id = place(&s, &a, Policy::BinPack).expect("placed");
    assert_eq!(name(&s, id), "n1");
    s.bind(a, id).expect("bind");
    assert_eq!(
        s.binding("default/a").map(|b| b.from_reserved),
        Some(Res::cpu_mem(2000, 2 * GI))
    );
    // web cannot use n1's reserved half: 3 cpus fit only on n2.
    let w = TaskB::new("w").role("web").cpus(3).t();
    assert_eq!(
        name(&s, place(&s, &w, Policy::BinPack).expect("placed")),
        "n2"
    );
    let w2 = TaskB::new("w2").role("web").cpus(4).t();
    let mut s2 = s.clone();
    s2.bind(
        w,
        place(
            &s,
            &TaskB::new("w").role("web").cpus(3).t(),
            Policy::BinPack,
        )
        .expect("p"),
    )
    .expect("bind");
    let Err(Unplaced::NoNode(f)) = place(&s2, &w2, Policy::BinPack) else {
        panic!("should not fit")
    };
    assert!(f.exhausted.iter().any(|(d, _)| *d == 0), "{f:?}");
    assert!(s2.consistent());
}

#[test]
fn reservation_mismatch_is_explained() {
    let mut n1 = node("n1", 4, 16);
    n1.reserved
        .insert("analytics".into(), Res::cpu_mem(3000, 8 * GI));
    let s = cluster(vec![n1]);
    let w = TaskB::new("w").role("web").cpus(2).t();
    let Err(why @ Unplaced::NoNode(_)) = place(&s, &w, Policy::BinPack) else {
        panic!("should not fit")
    };
    let e = explain(&s, &w, &why, at(0));
    assert_eq!(
        e.reasons[0].kind,
        PendingReasonKind::ReservationMismatch,
        "{e:?}"
    );
}

fn limited(limit_cpus: i64, parent: Option<&str>) -> RoleInfo {
    let mut r = RoleInfo {
        parent: parent.map(str::to_owned),
        ..Default::default()
    };
    r.limit.0[0] = limit_cpus * 1000;
    r.limited[0] = true;
    r
}

#[test]
fn quota_limits_bind_the_role_and_its_children() {
    let mut s = cluster(vec![node("n1", 32, 128)]);
    s.upsert_role("eng", limited(4, None));
    s.upsert_role(
        "backend",
        RoleInfo {
            parent: Some("eng".into()),
            ..Default::default()
        },
    );
    for i in 0..4 {
        let t = TaskB::new(&format!("b{i}")).role("backend").t();
        let id = place(&s, &t, Policy::BinPack).expect("within quota");
        s.bind(t, id).expect("bind");
    }
    let over = TaskB::new("b4").role("backend").t();
    let why = place(&s, &over, Policy::BinPack).expect_err("over quota");
    assert_eq!(
        why,
        Unplaced::Quota {
            role: "eng".into(),
            resource: "cpus".into(),
            needed: 5000,
            limit: 4000
        }
    );
    let e = explain(&s, &over, &why, at(0));
    assert_eq!(e.reasons[0].kind, PendingReasonKind::QuotaExceeded);
    assert_eq!(
        (
            e.reasons[0].needed.as_deref(),
            e.reasons[0].available.as_deref()
        ),
        (Some("5"), Some("4"))
    );
}

#[test]
fn revocable_tasks_run_only_on_revocable_capacity() {
    let mut n1 = node("n1", 4, 16);
    n1.revocable = Res::cpu_mem(2000, 4 * GI);
    let mut s = cluster(vec![n1, node("n2", 4, 16)]);
    let r = TaskB::new("r").tier(Tier::Revocable).cpus(2).t();
    let id = place(&s, &r, Policy::BinPack).expect("placed");
    assert_eq!(name(&s, id), "n1");
    s.bind(r, id).expect("bind");
    assert_eq!(
        s.node(id).free_for("ads"),
        Res::cpu_mem(4000, 16 * GI),
        "regular capacity untouched"
    );
    let r2 = TaskB::new("r2").tier(Tier::Revocable).cpus(1).t();
    let Err(Unplaced::NoNode(f)) = place(&s, &r2, Policy::BinPack) else {
        panic!("no revocable room left")
    };
    assert_eq!(f.no_revocable, 1, "{f:?}");
}

#[test]
fn drf_shares_converge_to_the_weights() {
    let nodes: Vec<NodeState> = (0..10).map(|i| node(&format!("n{i}"), 10, 100)).collect();
    let mut s = cluster(nodes);
    s.upsert_role(
        "light",
        RoleInfo {
            weight: 1.0,
            ..Default::default()
        },
    );
    s.upsert_role(
        "heavy",
        RoleInfo {
            weight: 2.0,
            ..Default::default()
        },
    );
    let mut pending = Vec::new();
    for i in 0..100 {
        pending.push(TaskB::new(&format!("l{i}")).role("light").t());
        pending.push(TaskB::new(&format!("h{i}")).role("heavy").t());
    }
    let cycle = run_cycle(&mut s, pending, Policy::Spread);
    let count = |p: &str| {
        cycle
            .bound
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("default/{p}")))
            .count()
    };
    assert_eq!(
        cycle.bound.len(),
        100,
        "the cluster holds 100 one-cpu tasks"
    );
    let (l, h) = (count("l"), count("h"));
    assert!((h as i64 - 2 * l as i64).abs() <= 2, "light {l}, heavy {h}");
    assert_eq!(cycle.pending.len(), 100);
}

#[test]
fn the_talk_hardware_efficiency_story_packs_cpu_and_memory_heavy_work_together() {
    let mut s = cluster(vec![node("box-1", 8, 16), node("box-2", 8, 16)]);
    let mut pending = Vec::new();
    for i in 0..3 {
        pending.push(
            TaskB::new(&format!("web-{i}"))
                .role("web")
                .job("web")
                .cpus(2)
                .mem_gi(1)
                .t(),
        );
    }
    for i in 0..2 {
        pending.push(
            TaskB::new(&format!("spark-{i}"))
                .role("analytics")
                .job("spark")
                .cpus(1)
                .mem_gi(5)
                .t(),
        );
    }
    let cycle = run_cycle(&mut s, pending, Policy::BinPack);
    assert_eq!(cycle.bound.len(), 5);
    let nodes: std::collections::BTreeSet<&str> =
        cycle.bound.iter().map(|(_, id)| name(&s, *id)).collect();
    assert_eq!(
        nodes.len(),
        1,
        "CPU-heavy and memory-heavy tasks share one machine: {nodes:?}"
    );
}

#[test]
fn the_talk_day_and_night_story_shares_one_cluster_through_quotas() {
    let mut s = cluster(vec![node("n1", 8, 64), node("n2", 8, 64)]);
    s.upsert_role("web", limited(12, None));
    s.upsert_role("analytics", limited(8, None));
    // Day: web runs 12 cpus; analytics gets what is left (4), the rest waits.
    let day: Vec<SchedTask> = (0..12)
        .map(|i| TaskB::new(&format!("web-{i}")).role("web").t())
        .collect();
    run_cycle(&mut s, day, Policy::BinPack);
    let batch: Vec<SchedTask> = (0..10)
        .map(|i| TaskB::new(&format!("batch-{i}")).role("analytics").t())
        .collect();
    let c = run_cycle(&mut s, batch.clone(), Policy::BinPack);
    assert_eq!(c.bound.len(), 4);
    // Night: web scales down; analytics grows to its limit, not beyond.
    for i in 0..12 {
        s.unbind(&format!("default/web-{i}"));
    }
    let rest: Vec<SchedTask> = c.pending.into_iter().map(|(t, _)| t).collect();
    let night = run_cycle(&mut s, rest, Policy::BinPack);
    assert_eq!(night.bound.len(), 4, "analytics stops at its 8-cpu limit");
    assert!(
        night
            .pending
            .iter()
            .all(|(_, why)| matches!(why, Unplaced::Quota { .. }))
    );
}

#[test]
fn preemption_takes_the_cheapest_victims_and_holds_the_room() {
    let mut s = cluster(vec![node("n1", 4, 16), node("n2", 4, 16)]);
    let victims = [
        TaskB::new("old-low").priority(0).created(0).started(0).t(),
        TaskB::new("young-low")
            .priority(0)
            .created(10)
            .started(10)
            .t(),
        TaskB::new("mid").priority(5).created(5).started(5).t(),
        TaskB::new("prod")
            .tier(Tier::Preferred)
            .created(1)
            .started(1)
            .t(),
    ];
    for (t, n) in victims.into_iter().zip(["n1", "n1", "n2", "n2"]) {
        let id = s.node_id(n).expect("node");
        let mut t = t;
        t.request = Res::cpu_mem(2000, GI);
        s.bind(t, id).expect("bind");
    }
    let now = at(1000);
    let rules = Rules::default();
    let p = TaskB::new("preemptor").tier(Tier::Preferred).cpus(2).t();
    assert!(
        place(&s, &p, Policy::BinPack).is_err(),
        "the cluster is full"
    );
    let plan = preempt::plan(&s, &p, now, &rules).expect("a plan");
    // n1 needs one preemptible victim, n2 one too but of higher priority: n1 wins,
    // and the youngest of equal priority goes first.
    assert_eq!(name(&s, plan.node), "n1");
    assert_eq!(
        plan.victims
            .iter()
            .map(|v| (v.key.as_str(), v.rule))
            .collect::<Vec<_>>(),
        vec![("default/young-low", Rule::LowerTier)]
    );
    assert_eq!(
        preempt::plan(&s, &p, now, &rules),
        Some(plan.clone()),
        "deterministic"
    );
    preempt::apply(&mut s, &plan, &p, now, &rules).expect("hold");
    // Nobody else takes the held room.
    let thief = TaskB::new("thief").tier(Tier::Preferred).cpus(2).t();
    assert!(place(&s, &thief, Policy::BinPack).is_err());
    // The preemptor fits once its hold is released for it.
    assert_eq!(preempt::release(&mut s, &p.key), Some(plan.node));
    assert_eq!(place(&s, &p, Policy::BinPack), Ok(plan.node));
    assert!(s.consistent());
}

#[test]
fn preemption_respects_tiers_minimum_runtime_and_budget() {
    let mut s = cluster(vec![node("n1", 2, 16)]);
    let mut young = TaskB::new("young").started(990).t();
    young.request = Res::cpu_mem(2000, GI);
    s.bind(young, 0).expect("bind");
    let p = TaskB::new("p").tier(Tier::Preferred).cpus(2).t();
    assert_eq!(
        preempt::plan(&s, &p, at(1000), &Rules::default()),
        None,
        "ran only 10 s"
    );
    assert!(preempt::plan(&s, &p, at(2000), &Rules::default()).is_some());
    let peer = TaskB::new("peer")
        .tier(Tier::Preemptible)
        .priority(100)
        .role("other")
        .cpus(2)
        .t();
    assert_eq!(
        preempt::plan(&s, &peer, at(2000), &Rules::default()),
        None,
        "same tier, other role: never"
    );
    let strict = Rules {
        budget_per_role: 0,
        ..Rules::default()
    };
    assert_eq!(
        preempt::plan(&s, &p, at(2000), &strict),
        None,
        "no budget left"
    );
}

mod props;

#[cfg(test)]
mod gangs;

#[cfg(test)]
mod borrowing;

#[cfg(test)]
mod maintenance;

fn guaranteed(cpus: i64, lend_unused: bool, borrow: bool) -> RoleInfo {
    RoleInfo {
        guarantee: Res::cpu_mem(cpus * 1000, 0),
        lend_unused,
        borrow,
        ..Default::default()
    }
}

/// Places and binds, or panics with why not.
fn run(s: &mut Snapshot, t: SchedTask) {
    let id = place(s, &t, Policy::BinPack).unwrap_or_else(|e| panic!("{}: {e:?}", t.key));
    s.bind(t, id).expect("bind");
}

#[test]
fn unused_guarantees_are_lent_only_where_allowed() {
    let mut s = cluster(vec![node("n1", 8, 64)]);
    s.upsert_role("web", guaranteed(4, true, true));
    s.upsert_role("private", guaranteed(2, false, true));
    s.upsert_role("strict", guaranteed(0, true, false));
    // batch has no quota: it may borrow web's unused guarantee, not private's.
    run(&mut s, TaskB::new("b1").role("batch").cpus(4).t());
    let b2 = TaskB::new("b2").role("batch").cpus(4).t();
    let why = place(&s, &b2, Policy::BinPack).expect_err("protected");
    assert_eq!(
        why,
        Unplaced::Guarantee {
            resource: "cpus".into(),
            needed: 4000,
            available: 2000,
            protected: 2000
        }
    );
    let e = explain(&s, &b2, &why, at(0));
    assert_eq!(e.reasons[0].kind, PendingReasonKind::GuaranteeProtected);
    // A role that may not borrow finds web's unused 4 protected from it too.
    let st = TaskB::new("s1").role("strict").cpus(1).t();
    assert!(matches!(
        place(&s, &st, Policy::BinPack),
        Err(Unplaced::Guarantee {
            protected: 6000,
            ..
        })
    ));
    // Within their own guarantees, owners are always admitted.
    run(&mut s, TaskB::new("p1").role("private").cpus(2).t());
    run(&mut s, TaskB::new("w1").role("web").cpus(2).t());
    // Revocable work never touches guarantees.
    assert!(
        super::guarantee::check(&s, &TaskB::new("r").role("batch").tier(Tier::Revocable).t())
            .is_ok()
    );
}

#[test]
fn a_role_reclaims_its_guarantee_from_borrowers_but_never_below_theirs() {
    let mut s = cluster(vec![node("n1", 8, 64)]);
    s.upsert_role("web", guaranteed(6, true, true));
    s.upsert_role("batch", guaranteed(2, true, true));
    for i in 0..8 {
        let t = TaskB::new(&format!("b{i}"))
            .role("batch")
            .job("batch")
            .priority(9)
            .created(i)
            .started(i)
            .t();
        run(&mut s, t);
    }
    let now = at(1000);
    let rules = Rules::default();
    // Same tier, another role, lower priority: only the guarantee gives a right.
    let w = TaskB::new("w0").role("web").cpus(2).t();
    assert!(place(&s, &w, Policy::BinPack).is_err(), "full");
    let plan = preempt::plan(&s, &w, now, &rules).expect("reclaim");
    assert_eq!(plan.victims.len(), 2);
    assert!(plan.victims.iter().all(|v| v.rule == Rule::Reclaim));
    // The youngest borrowers go first.
    assert_eq!(plan.victims[0].key, "default/b7");
    preempt::apply(&mut s, &plan, &w, now, &rules).expect("hold");
    preempt::release(&mut s, &w.key);
    run(&mut s, w);
    // Up to its guarantee, web keeps reclaiming; batch stays at 2.
    let w1 = TaskB::new("w1").role("web").cpus(4).t();
    let plan = preempt::plan(&s, &w1, now, &rules).expect("reclaim the rest");
    assert_eq!(plan.victims.len(), 4);
    preempt::apply(&mut s, &plan, &w1, now, &rules).expect("hold");
    preempt::release(&mut s, &w1.key);
    run(&mut s, w1);
    assert_eq!(s.regular_usage_with_children("batch").0[0], 2000);
    // Beyond its guarantee, web has no claim on batch's last 2 CPUs.
    let w2 = TaskB::new("w2").role("web").cpus(1).t();
    assert_eq!(preempt::plan(&s, &w2, now, &rules), None);
    // Nor may a reclaim take a borrower below its guarantee: with web at 4,
    // batch at 4 (2 borrowed), a 2-CPU web task may take 2, not 3.
    let mut s = cluster(vec![node("n1", 8, 64)]);
    s.upsert_role("web", guaranteed(6, true, true));
    s.upsert_role("batch", guaranteed(2, true, true));
    for i in 0..4 {
        run(&mut s, TaskB::new(&format!("w{i}")).role("web").t());
        run(
            &mut s,
            TaskB::new(&format!("b{i}")).role("batch").started(0).t(),
        );
    }
    let big = TaskB::new("w9").role("web").cpus(3).t();
    assert_eq!(preempt::plan(&s, &big, now, &rules), None, "6 < 4 + 3");
    let two = TaskB::new("w8").role("web").cpus(2).t();
    assert_eq!(
        preempt::plan(&s, &two, now, &rules).map(|p| p.victims.len()),
        Some(2)
    );
}

mod ports;
