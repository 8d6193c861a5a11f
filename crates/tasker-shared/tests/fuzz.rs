//! Bad input never panics and always gets an error that says something: property tests over
//! the template parser and the queue message decoders.

use proptest::prelude::*;
use std::path::Path;
use tasker_shared::messages::{StepMessage, StepResultMessage};
use tasker_shared::template::parse_template;

const VALID: &str = include_str!("../../../config/tasks/order_fulfillment.yaml");

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| serde_json::json!(f)),
        "\\PC{0,12}".prop_map(serde_json::Value::String),
        Just(serde_json::json!(uuid::Uuid::nil().to_string())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("task_uuid".to_string()),
                    Just("step_uuid".to_string()),
                    Just("step_name".to_string()),
                    Just("namespace".to_string()),
                    Just("attempt".to_string()),
                    Just("success".to_string()),
                    Just("worker_id".to_string()),
                    "[a-z_]{1,10}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn template_parser_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
        if let Err(e) = parse_template(&text, Path::new("fuzz.yaml")) {
            prop_assert!(e.to_string().starts_with("fuzz.yaml"), "{}", e);
        }
    }

    #[test]
    fn template_parser_never_panics_on_mutated_templates(cut in 0..VALID.len(), insert in "\\PC{0,20}", drop in 0usize..40) {
        let mut text = String::with_capacity(VALID.len() + insert.len());
        let cut = (0..=cut).rev().find(|i| VALID.is_char_boundary(*i)).unwrap_or(0);
        let end = (cut + drop).min(VALID.len());
        let end = (end..=VALID.len()).find(|i| VALID.is_char_boundary(*i)).unwrap_or(VALID.len());
        text.push_str(&VALID[..cut]);
        text.push_str(&insert);
        text.push_str(&VALID[end..]);
        match parse_template(&text, Path::new("fuzz.yaml")) {
            Ok(t) => prop_assert!(!t.steps.is_empty()),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn message_decoders_never_panic(value in json_value()) {
        match StepMessage::decode(&value) {
            Ok(m) => prop_assert_eq!(StepMessage::decode(&serde_json::to_value(&m).unwrap()).unwrap(), m),
            Err(e) => prop_assert!(e.to_string().contains("malformed step message")),
        }
        match StepResultMessage::decode(&value) {
            Ok(m) => prop_assert_eq!(StepResultMessage::decode(&serde_json::to_value(&m).unwrap()).unwrap(), m),
            Err(e) => prop_assert!(e.to_string().contains("malformed step result message")),
        }
    }

    #[test]
    fn well_formed_step_messages_always_decode(task in any::<u128>(), step in any::<u128>(), name in "[a-z_]{1,20}", attempt in 1i32..100) {
        let v = serde_json::json!({
            "task_uuid": uuid::Uuid::from_u128(task), "step_uuid": uuid::Uuid::from_u128(step),
            "step_name": name, "namespace": "ns", "attempt": attempt,
        });
        prop_assert!(StepMessage::decode(&v).is_ok());
    }
}
