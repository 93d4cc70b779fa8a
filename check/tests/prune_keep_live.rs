//! Found by the model checker on the null backend at 100,000 sequences (shrunk): a
//! prune whose second delete also frees retired data with a `discard_leaf` step, which
//! this run's backend allows only while paused (the domain runs after the revert). The
//! engine checks every delete of a prune before any runs and refuses the whole prune; the
//! model ran the first delete and then failed. The model now checks first too
//! (`RefModel::prune`).

use snaptree_check::model::{RefModel, Target};
use snaptree_check::transition::RefState;
use snaptree_check::{Config, Subject, Transition, run_sequence_from};
use snaptree_engine::{NullBackend, Uuid};

#[test]
fn a_prune_after_keeping_the_live_state_matches_the_model() {
    let create = |name: &str, uuid: u128| Transition::Create {
        name: name.into(),
        uuid: Uuid::from_u128(uuid),
    };
    let sequence = [
        create("e", 0),
        create("a", 1),
        Transition::SetKeepLast { last: Some(0) },
        create("b", 2),
        Transition::Prune,
        create("a", 3),
        Transition::CreateWith {
            name: None,
            uuid: Some(Uuid::from_u128(4)),
            description: None,
        },
        Transition::Delete {
            target: Target::Name("<generated #5>".into()),
            flags: 0,
        },
        create("a", 0),
        Transition::RevertKeep {
            target: Target::Name("a".into()),
            flags: 1,
            keep: Some("c".into()),
        },
        Transition::Prune,
    ];
    let mut config = Config::from_env(1);
    config.tree_only = true;
    config.reach.metadata_only = true;
    config.reach.faults = false;
    let initial = RefState {
        model: RefModel {
            caps: [7, 7, 2, 7, 7, 7, 7],
            metadata_only: true,
            ..RefModel::default()
        },
        durable: false,
    };
    let subject = Subject {
        domain_xml: "<domain type='null'><name>mc</name></domain>".into(),
        backend: Box::new(NullBackend::new()),
    };
    run_sequence_from(subject, initial, &sequence, &config, None, None).unwrap();
}
