use std::path::{Path, PathBuf};
use tasker_shared::template::{load_template_dirs, parse_template, TemplateError};

const BASE: &str = r#"
name: t
namespace: ns
version: 1.0.0
steps:
  - name: a
    handler: { callable: A }
  - name: b
    handler: { callable: B }
    dependencies: [a]
"#;

fn parse(text: &str) -> Result<tasker_shared::TaskTemplate, TemplateError> {
    parse_template(text, Path::new("bad.yaml"))
}

#[test]
fn example_templates_all_validate() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/tasks");
    let templates = load_template_dirs(&[dir]).expect("example templates validate");
    let names: Vec<_> = templates.iter().map(|(_, t)| t.name.as_str()).collect();
    for expected in [
        "linear_math",
        "diamond_math",
        "tree_math",
        "mixed_dag_math",
        "order_fulfillment",
        "retry_then_succeed",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[test]
fn duplicate_step_names() {
    let err = parse(&BASE.replace("name: b", "name: a")).unwrap_err();
    assert_eq!(
        err,
        TemplateError::DuplicateStep {
            path: "bad.yaml".into(),
            step: "a".into()
        }
    );
    assert!(err.to_string().contains("bad.yaml"));
}

#[test]
fn unknown_dependency() {
    let err = parse(&BASE.replace("[a]", "[nope]")).unwrap_err();
    assert!(
        matches!(&err, TemplateError::UnknownDependency { step, dependency, .. } if step == "b" && dependency == "nope"),
        "{err}"
    );
    assert!(err.to_string().contains("'dependencies'"));
}

#[test]
fn dependency_cycle_is_named() {
    let text = BASE.replace(
        "handler: { callable: A }",
        "handler: { callable: A }\n    dependencies: [b]",
    );
    let err = parse(&text).unwrap_err();
    match &err {
        TemplateError::Cycle { cycle, .. } => {
            assert_eq!(cycle.first(), cycle.last());
            assert!(
                cycle.contains(&"a".to_string()) && cycle.contains(&"b".to_string()),
                "{cycle:?}"
            );
        }
        other => panic!("expected a cycle, got {other}"),
    }
    assert!(
        err.to_string().contains("a -> b -> a") || err.to_string().contains("b -> a -> b"),
        "{err}"
    );
}

#[test]
fn self_dependency_is_a_cycle() {
    let err = parse(&BASE.replace("[a]", "[b]")).unwrap_err();
    assert!(matches!(err, TemplateError::Cycle { .. }), "{err}");
}

#[test]
fn empty_steps() {
    let err = parse("name: t\nnamespace: ns\nversion: '1'\nsteps: []\n").unwrap_err();
    assert_eq!(
        err,
        TemplateError::EmptySteps {
            path: "bad.yaml".into()
        }
    );
}

#[test]
fn out_of_range_retry_values() {
    let with_retry = |retry: &str| {
        BASE.replace(
            "handler: { callable: B }",
            &format!("handler: {{ callable: B }}\n    retry: {retry}"),
        )
    };
    for (retry, field) in [
        ("{ max_attempts: 0 }", "max_attempts"),
        ("{ max_attempts: 1000 }", "max_attempts"),
        (
            "{ backoff_base_ms: 5000, max_backoff_ms: 100 }",
            "backoff_base_ms",
        ),
        ("{ max_backoff_ms: 999999999999 }", "max_backoff_ms"),
    ] {
        let err = parse(&with_retry(retry)).unwrap_err();
        match &err {
            TemplateError::InvalidRetry { step, field: f, .. } => {
                assert_eq!(step, "b");
                assert_eq!(*f, field);
            }
            other => panic!("{retry}: expected InvalidRetry, got {other}"),
        }
        assert!(err.to_string().contains(&format!("retry.{field}")), "{err}");
    }
    let err = parse(&with_retry("{ backoff: sometimes }")).unwrap_err();
    assert!(matches!(err, TemplateError::Malformed { .. }), "{err}");
}

#[test]
fn malformed_yaml_and_unknown_keys() {
    let err = parse("name: [unclosed").unwrap_err();
    assert!(matches!(err, TemplateError::Malformed { .. }), "{err}");
    let err = parse(&BASE.replace("dependencies: [a]", "dependencis: [a]")).unwrap_err();
    assert!(err.to_string().contains("dependencis"), "{err}");
}

#[test]
fn bad_namespace_timeout_and_schema() {
    let err = parse(&BASE.replace("namespace: ns", "namespace: \"x'; drop\"")).unwrap_err();
    assert!(
        matches!(&err, TemplateError::InvalidField { field, .. } if field == "namespace"),
        "{err}"
    );
    let err = parse(&BASE.replace(
        "handler: { callable: B }",
        "handler: { callable: B }\n    timeout_seconds: 0",
    ))
    .unwrap_err();
    assert!(
        matches!(&err, TemplateError::InvalidField { field, step: Some(s), .. } if field == "timeout_seconds" && s == "b"),
        "{err}"
    );
    let err = parse(&format!("{BASE}input_schema: {{ type: 12 }}\n")).unwrap_err();
    assert!(
        matches!(&err, TemplateError::InvalidField { field, .. } if field == "input_schema"),
        "{err}"
    );
}

#[test]
fn environment_overrides_apply_to_one_environment() {
    let text = format!(
        "{BASE}environments:\n  test:\n    steps:\n      - {{ name: b, timeout_seconds: 5, retry: {{ max_attempts: 7 }} }}\n"
    );
    let t = parse(&text).unwrap();
    let test = t.for_environment("test");
    assert_eq!(test.step("b").unwrap().timeout_seconds, Some(5));
    assert_eq!(test.step("b").unwrap().retry.max_attempts, Some(7));
    assert!(test.environments.is_empty());
    let prod = t.for_environment("production");
    assert_eq!(prod.step("b").unwrap().timeout_seconds, None);
    let err = parse(&format!(
        "{BASE}environments:\n  test:\n    steps:\n      - {{ name: zz, timeout_seconds: 5 }}\n"
    ))
    .unwrap_err();
    assert!(err.to_string().contains("zz"), "{err}");
}

const DYNAMIC: &str = r#"
name: dyn
namespace: ns
version: 1.0.0
steps:
  - name: route
    type: decision
    handler: { callable: Route }
  - name: auto_approve
    dependencies: [route]
    handler: { callable: Auto }
  - name: manager_approval
    dependencies: [route]
    handler: { callable: Manager }
  - name: finalize
    type: deferred_convergence
    dependencies: [route, auto_approve, manager_approval]
    handler: { callable: Finalize }
  - name: plan
    type: batchable
    batch: { worker: process_batch, max_workers: 1000 }
    handler: { callable: Plan }
  - name: process_batch
    type: batch_worker
    dependencies: [plan]
    handler: { callable: ProcessBatch }
  - name: aggregate
    type: deferred_convergence
    dependencies: [process_batch]
    handler: { callable: Aggregate }
"#;

fn dynamic_error(from: &str, to: &str) -> (String, String, String) {
    let text = DYNAMIC.replace(from, to);
    assert_ne!(text, DYNAMIC, "the replacement of {from:?} applies");
    match parse(&text).unwrap_err() {
        err @ TemplateError::InvalidField { step: Some(_), .. } => {
            let TemplateError::InvalidField { step, field, .. } = &err else {
                unreachable!()
            };
            (step.clone().unwrap(), field.clone(), err.to_string())
        }
        other => panic!("expected InvalidField for {to:?}, got {other}"),
    }
}

#[test]
fn dynamic_step_types_parse_and_round_trip() {
    use tasker_shared::template::StepType;
    let t = parse(DYNAMIC).unwrap();
    assert!(t.is_dynamic());
    assert!(!parse(BASE).unwrap().is_dynamic());
    assert_eq!(t.step("route").unwrap().step_type, StepType::Decision);
    assert_eq!(
        t.step("auto_approve").unwrap().step_type,
        StepType::Standard
    );
    let batch = t.step("plan").unwrap().batch.as_ref().unwrap();
    assert_eq!(
        (batch.worker.as_str(), batch.max_workers),
        ("process_batch", 1000)
    );
    assert_eq!(t.gate_of("auto_approve"), Some("route"));
    assert_eq!(t.gate_of("process_batch"), Some("plan"));
    assert_eq!(t.gate_of("finalize"), None);
    assert_eq!(t.gate_of("route"), None);
    let json = serde_json::to_value(&t).unwrap();
    assert_eq!(json["steps"][0]["type"], "decision");
    assert!(
        json["steps"][1].get("type").is_none(),
        "standard is the default, left out"
    );
    let back: tasker_shared::TaskTemplate = serde_json::from_value(json).unwrap();
    assert_eq!(back, t);
    let err = parse(&DYNAMIC.replace("type: decision", "type: sometimes")).unwrap_err();
    assert!(matches!(err, TemplateError::Malformed { .. }), "{err}");
}

#[test]
fn batch_worker_without_batchable_parent() {
    let (step, field, msg) = dynamic_error(
        "    type: batch_worker\n    dependencies: [plan]",
        "    type: batch_worker\n    dependencies: [route]",
    );
    // The batchable step's batch.worker no longer names a worker that depends on it.
    assert_eq!(
        (step.as_str(), field.as_str()),
        ("plan", "batch.worker"),
        "{msg}"
    );
    assert!(
        msg.contains("bad.yaml") && msg.contains("process_batch"),
        "{msg}"
    );

    let text = r#"
name: t
namespace: ns
version: 1.0.0
steps:
  - name: a
    handler: { callable: A }
  - name: w
    type: batch_worker
    dependencies: [a]
    handler: { callable: W }
"#;
    let err = parse(text).unwrap_err();
    assert!(
        matches!(&err, TemplateError::InvalidField { step: Some(s), field, .. } if s == "w" && field == "dependencies"),
        "{err}"
    );
    assert!(err.to_string().contains("batchable"), "{err}");
}

#[test]
fn batch_worker_naming_no_batch_worker_step() {
    let (step, field, msg) = dynamic_error("worker: process_batch", "worker: nowhere");
    assert_eq!((step.as_str(), field.as_str()), ("plan", "batch.worker"));
    assert!(msg.contains("nowhere"), "{msg}");
    let (step, field, msg) = dynamic_error("worker: process_batch", "worker: route");
    assert_eq!((step.as_str(), field.as_str()), ("plan", "batch.worker"));
    assert!(msg.contains("not a batch_worker"), "{msg}");
}

#[test]
fn deferred_convergence_without_decision_or_batch_upstream() {
    let text = BASE.replace(
        "handler: { callable: B }",
        "handler: { callable: B }\n    type: deferred_convergence",
    );
    let err = parse(&text).unwrap_err();
    assert!(
        matches!(&err, TemplateError::InvalidField { step: Some(s), field, .. } if s == "b" && field == "type"),
        "{err}"
    );
    assert!(err.to_string().contains("decision or batchable"), "{err}");
}

#[test]
fn batch_settings_misused() {
    let (step, field, _) = dynamic_error("max_workers: 1000", "max_workers: 0");
    assert_eq!(
        (step.as_str(), field.as_str()),
        ("plan", "batch.max_workers")
    );
    let (step, field, _) = dynamic_error(
        "    type: batchable\n    batch: { worker: process_batch, max_workers: 1000 }\n",
        "    type: batchable\n",
    );
    assert_eq!((step.as_str(), field.as_str()), ("plan", "batch"));
    let (step, field, msg) = dynamic_error(
        "    type: decision\n",
        "    type: decision\n    batch: { worker: process_batch, max_workers: 2 }\n",
    );
    assert_eq!((step.as_str(), field.as_str()), ("route", "batch"));
    assert!(msg.contains("only allowed on a batchable step"), "{msg}");
}

#[test]
fn other_dynamic_misuses() {
    // A standard step cannot wait for batch copies.
    let (step, field, _) = dynamic_error(
        "    type: deferred_convergence\n    dependencies: [process_batch]",
        "    dependencies: [process_batch]",
    );
    assert_eq!(
        (step.as_str(), field.as_str()),
        ("aggregate", "dependencies")
    );
    // A step named like a batch copy.
    let (step, field, _) = dynamic_error(
        "  - name: aggregate\n",
        "  - name: process_batch_001\n    handler: { callable: X }\n  - name: aggregate\n",
    );
    assert_eq!(
        (step.as_str(), field.as_str()),
        ("process_batch_001", "name")
    );
    // A decision with nothing to choose.
    let text = r#"
name: t
namespace: ns
version: 1.0.0
steps:
  - name: d
    type: decision
    handler: { callable: D }
"#;
    let err = parse(text).unwrap_err();
    assert!(
        matches!(&err, TemplateError::InvalidField { step: Some(s), field, .. } if s == "d" && field == "type"),
        "{err}"
    );
}
