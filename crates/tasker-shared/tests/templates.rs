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
