//! A REDEFINE that sets a creation date and stops part-way (INCOMPLETE) sets the date when
//! a later call rolls it forward: the kit must take the date from the model then, not
//! insist on the one it saw before (found by the model checker in CI, shrunk to this).

use snaptree_check::model::{Redefinition, Target, create_flag};
use snaptree_check::{SimBackend, Subject, Transition, run_sequence};
use snaptree_engine::Uuid;

fn sim() -> Result<Subject, String> {
    Ok(Subject {
        domain_xml: "<domain type='sim'><name>mc</name></domain>".into(),
        backend: Box::new(SimBackend::new()),
    })
}

fn redefine(name: &str, uuid: u128, created: Option<i64>, flags: u32) -> Transition {
    Transition::Redefine(Redefinition {
        name: name.into(),
        uuid: Uuid::from_u128(uuid),
        parent: None,
        description: None,
        created,
        state: None,
        flags,
    })
}

#[test]
fn a_pending_redefine_sets_its_creation_date_when_rolled_forward() {
    let create = |name: &str, uuid: u128| Transition::Create {
        name: name.into(),
        uuid: Uuid::from_u128(uuid),
    };
    let retire = |name: &str| Transition::Delete {
        target: Target::Name(name.into()),
        flags: 0,
    };
    let sequence = [
        create("d", 1),
        create("g", 2),
        retire("d"),
        create("x", 3),
        retire("x"),
        // CURRENT moves the live state onto g: the retired data above it is freed by the
        // same plan, whose first step stops after running.
        Transition::Faulted {
            at: 0,
            after: true,
            op: Box::new(redefine(
                "g",
                2,
                Some(1_000_000_000),
                create_flag::REDEFINE | create_flag::CURRENT,
            )),
        },
        // Rolls the pending REDEFINE forward (and is itself refused: d's uuid is retired).
        redefine("a", 1, None, create_flag::REDEFINE),
    ];
    run_sequence(sim().unwrap(), &sequence, None).unwrap();
}
