//! Selector behaviour: the JMS specification's examples, SQL's three-valued logic, limits, and
//! a property test that no input can make parsing or evaluation panic.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

#[derive(Default)]
struct Message {
    properties: HashMap<Property, Value<'static>>,
    headers: HashMap<&'static str, Value<'static>>,
}

impl Fields for Message {
    fn property(&self, property: Property) -> Value<'_> {
        assert!(!matches!(property, Property::JmsTimestamp | Property::JmsDeliveryMode), "derived, never asked");
        self.properties.get(&property).copied().unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Value<'_> {
        self.headers.get(name).copied().unwrap_or(Value::Null)
    }
}

fn message(headers: &[(&'static str, Value<'static>)]) -> Message {
    let mut message = Message { headers: headers.iter().copied().collect(), ..Default::default() };
    message.properties.insert(Property::Priority, Value::Int(7));
    message.properties.insert(Property::MessageId, Value::Str("m-1"));
    message.properties.insert(Property::DeliveryMode, Value::Int(2));
    message.properties.insert(Property::Timestamp, Value::Int(1_700_000_000));
    message
}

fn selects(source: &str, message: &Message) -> bool {
    Selector::parse(source).unwrap_or_else(|e| panic!("{source}: {e}")).matches(message)
}

#[test]
fn the_spec_example_selects_by_property_and_header() {
    let eu = message(&[("region", Value::Str("eu"))]);
    let asia = message(&[("region", Value::Str("asia"))]);
    let source = "priority > 5 AND region IN ('eu','us')";
    assert!(selects(source, &eu));
    assert!(!selects(source, &asia));
    assert!(!selects("priority > 7 AND region IN ('eu','us')", &eu));
}

#[test]
fn missing_headers_are_null_and_unknown_is_never_selected() {
    let m = message(&[]);
    assert!(!selects("missing = 1", &m));
    assert!(!selects("NOT (missing = 1)", &m), "NOT UNKNOWN is UNKNOWN");
    assert!(!selects("missing <> 1", &m));
    assert!(selects("missing IS NULL", &m));
    assert!(!selects("missing IS NOT NULL", &m));
    assert!(selects("missing = 1 OR priority = 7", &m), "TRUE wins an OR");
    assert!(!selects("missing = 1 AND priority = 7", &m));
    assert!(selects("NOT (missing = 1 AND priority = 8)", &m), "FALSE wins an AND");
    assert!(!selects("missing IN ('a')", &m));
    assert!(!selects("missing NOT IN ('a')", &m));
    assert!(!selects("missing LIKE '%'", &m));
    assert!(!selects("missing BETWEEN 1 AND 2", &m));
}

#[test]
fn strings_and_booleans_compare_for_equality_only() {
    let m = message(&[("region", Value::Str("eu")), ("urgent", Value::Bool(true))]);
    assert!(selects("region = 'eu'", &m));
    assert!(selects("region <> 'us'", &m));
    assert!(!selects("region > 'a'", &m), "strings are not ordered: FALSE");
    assert!(selects("NOT (region > 'a')", &m), "FALSE, not UNKNOWN");
    assert!(selects("urgent", &m), "a boolean header is a condition");
    assert!(selects("urgent = TRUE", &m));
    assert!(!selects("NOT urgent", &m));
    assert!(!selects("region = 1", &m), "unlike types compare FALSE (JMS 1.1 3.8.1.2)");
    assert!(selects("NOT (region = 1)", &m));
    assert!(!selects("region <> 1", &m));
    assert!(selects("region NOT IN (1, 2)", &m));
    assert!(!selects("region", &m), "a string is not a condition");
}

#[test]
fn numbers_compare_and_compute_across_integer_and_decimal() {
    let m = message(&[("weight", Value::Int(2)), ("price", Value::Float(2.5)), ("quantity", Value::Int(50))]);
    assert!(selects("weight = 2.0", &m));
    assert!(selects("price * quantity > 100", &m));
    assert!(selects("price * quantity = 125", &m));
    assert!(selects("quantity / weight = 25", &m));
    assert!(selects("quantity / 3 = 16", &m), "integer division");
    assert!(selects("-weight < 0 AND +weight > 1", &m));
    assert!(selects("quantity - weight * 2 = 46", &m));
    assert!(selects("(quantity - weight) * 2 = 96", &m));
    assert!(selects("weight BETWEEN 1 AND 2", &m));
    assert!(selects("weight NOT BETWEEN 3 AND 4", &m));
    assert!(selects("weight IN (1, 2.0, 3)", &m));
    assert!(selects("1.5e1 = 15 AND .5 = 0.5", &m));
}

#[test]
fn overflow_and_division_by_zero_are_unknown() {
    let m = message(&[("big", Value::Int(i64::MAX)), ("zero", Value::Int(0))]);
    assert!(!selects("big + 1 > 0", &m));
    assert!(!selects("NOT (big + 1 > 0)", &m));
    assert!(!selects("1 / zero = 0", &m));
    assert!(!selects("1.0 / zero > 0", &m));
    assert!(selects("-9223372036854775808 < 0", &m));
    assert!(selects("99999999999999999999 > big", &m), "too big for 64 bits becomes a decimal");
}

#[test]
fn like_patterns_as_the_jms_specification_gives_them() {
    let cases = [
        ("12%3", "123", true),
        ("12%3", "12993", true),
        ("12%3", "1234", false),
        ("l_se", "lose", true),
        ("l_se", "loose", false),
        ("%", "", true),
        ("_", "", false),
        ("a%b%c", "aXXbYc", true),
        ("a%b%c", "aXXbYcd", false),
        ("%%x", "yyx", true),
        ("ü_", "üö", true),
    ];
    for (pattern, text, expected) in cases {
        let m = message(&[("word", Value::Str(text))]);
        assert_eq!(selects(&format!("word LIKE '{pattern}'"), &m), expected, "{text} LIKE {pattern}");
        assert_eq!(selects(&format!("word NOT LIKE '{pattern}'"), &m), !expected, "{text} NOT LIKE {pattern}");
    }
    let m = message(&[("word", Value::Str("_foo"))]);
    assert!(selects(r"word LIKE '\_%' ESCAPE '\'", &m));
    let m = message(&[("word", Value::Str("xfoo"))]);
    assert!(!selects(r"word LIKE '\_%' ESCAPE '\'", &m));
}

#[test]
fn properties_have_plain_and_jms_names_and_quotes_reach_headers() {
    let m = message(&[("x-region", Value::Str("eu")), ("priority", Value::Int(1))]);
    assert!(selects("JMSPriority = 7 AND priority = 7", &m));
    assert!(selects("\"priority\" = 1", &m), "a quoted name is always a header");
    assert!(selects("\"x-region\" = 'eu'", &m));
    assert!(selects("message_id = 'm-1' AND JMSMessageID = 'm-1'", &m));
    assert!(selects("JMSDeliveryMode = 'PERSISTENT' AND delivery_mode = 2", &m));
    assert!(selects("JMSTimestamp = 1700000000000 AND timestamp = 1700000000", &m));
    assert!(selects("correlation_id IS NULL", &m));
    assert!(selects("priority = 7 and not priority = 8 OR false", &m), "keywords in any case");
    assert!(!selects("Priority = 7", &m), "names are case-sensitive: this is a header");
}

#[test]
fn limits_are_checked_at_parse_time() {
    let long = format!("a = '{}'", "x".repeat(SOURCE_BYTES_MAX));
    assert!(Selector::parse(&long).unwrap_err().message.contains("longer than"));
    let error = Selector::parse("a = ").unwrap_err();
    assert_eq!(error.to_string(), "selector error at character 5: expected a value, found the end");
}

fn token() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "a", "priority", "\"x-y\"", "'s'", "'%_'", "1", "2.5", "-", "+", "*", "/", "=", "<>", "<", ">=", "(", ")", ",",
        "AND", "OR", "NOT", "BETWEEN", "IN", "LIKE", "ESCAPE", "IS", "NULL", "TRUE", "FALSE", "'", "\"",
    ])
}

proptest! {
    /// Any sequence of selector tokens either parses or is refused; what parses evaluates.
    #[test]
    fn no_input_panics(tokens in prop::collection::vec(token(), 0..40), raw in ".{0,40}") {
        let m = message(&[("a", Value::Int(1)), ("x-y", Value::Str("%_"))]);
        for source in [tokens.join(" "), raw] {
            if let Ok(selector) = Selector::parse(&source) {
                let _ = selector.matches(&m);
            }
        }
    }
}
