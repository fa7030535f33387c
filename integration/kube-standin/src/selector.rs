//! Label and field selectors, parsed and matched as the API server does.
//!
//! Label selectors: comma-separated requirements, all of which must hold — `key` (present),
//! `!key` (absent), `key=value` / `key==value`, `key!=value` (absent or different),
//! `key in (a,b)` and `key notin (a,b)` (absent or not listed).
//!
//! Field selectors: comma-separated `field=value`, `field==value` or `field!=value` over the
//! fields every kind supports, `metadata.name` and `metadata.namespace`.

use std::collections::BTreeMap;

use serde_json::Value;

/// A selector the server cannot parse (answered with 400 Bad Request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(String);

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key`: the label is present.
    Exists(String),
    /// `!key`: the label is absent.
    NotExists(String),
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value`: the label is absent or has another value.
    NotEquals(String, String),
    /// `key in (a,b)`: the label is present with one of the values.
    In(String, Vec<String>),
    /// `key notin (a,b)`: the label is absent or has none of the values.
    NotIn(String, Vec<String>),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => !labels.get(k).is_some_and(|v| vs.contains(v)),
        }
    }
}

/// A parsed label selector (empty: matches everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// The requirements, all of which must hold.
    pub requirements: Vec<Requirement>,
}

fn check_key(key: &str, term: &str) -> Result<String, SelectorError> {
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if valid {
        Ok(key.to_owned())
    } else {
        Err(SelectorError(format!(
            "unable to parse requirement: invalid label key {key:?} in {term:?}"
        )))
    }
}

fn check_value(value: &str, term: &str) -> Result<String, SelectorError> {
    let valid = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(value.to_owned())
    } else {
        Err(SelectorError(format!(
            "unable to parse requirement: invalid label value {value:?} in {term:?}"
        )))
    }
}

/// Splits on commas outside parentheses.
fn split_terms(text: &str) -> Result<Vec<&str>, SelectorError> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| SelectorError(format!("unbalanced ')' in {text:?}")))?;
            }
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(SelectorError(format!("unbalanced '(' in {text:?}")));
    }
    terms.push(&text[start..]);
    Ok(terms)
}

fn parse_set(key: &str, op: &str, rest: &str, term: &str) -> Result<Requirement, SelectorError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError(format!("expected '(values)' after {op:?} in {term:?}")))?;
    let values = inner
        .split(',')
        .map(|v| check_value(v.trim(), term))
        .collect::<Result<Vec<_>, _>>()?;
    let key = check_key(key, term)?;
    Ok(if op == "in" {
        Requirement::In(key, values)
    } else {
        Requirement::NotIn(key, values)
    })
}

fn parse_requirement(term: &str) -> Result<Requirement, SelectorError> {
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Requirement::NotExists(check_key(key.trim(), term)?));
    }
    if let Some(paren) = term.find('(') {
        let head: Vec<&str> = term[..paren].split_whitespace().collect();
        return match head.as_slice() {
            [key, op @ ("in" | "notin")] => parse_set(key, op, &term[paren..], term),
            _ => Err(SelectorError(format!(
                "unable to parse requirement {term:?}: expected 'key in (..)' or 'key notin (..)'"
            ))),
        };
    }
    if let Some((key, value)) = term.split_once("!=") {
        return Ok(Requirement::NotEquals(
            check_key(key.trim(), term)?,
            check_value(value.trim(), term)?,
        ));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Requirement::Equals(
            check_key(key.trim(), term)?,
            check_value(value.trim(), term)?,
        ));
    }
    Ok(Requirement::Exists(check_key(term, term)?))
}

impl LabelSelector {
    /// Parses a `labelSelector` query value.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let requirements = split_terms(text)?
            .into_iter()
            .map(|term| parse_requirement(term.trim()))
            .collect::<Result<_, _>>()?;
        Ok(Self { requirements })
    }

    /// Whether labels satisfy every requirement.
    pub fn matches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        if self.requirements.is_empty() {
            return true;
        }
        let labels: BTreeMap<String, String> = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|map| {
                map.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        self.matches_labels(&labels)
    }
}

/// A field of the objects a field selector can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `metadata.name`.
    Name,
    /// `metadata.namespace`.
    Namespace,
}

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field tested.
    pub field: Field,
    /// `true` for `!=`.
    pub negated: bool,
    /// The value compared with.
    pub value: String,
}

/// A parsed field selector (empty: matches everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// The terms, all of which must hold.
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses a `fieldSelector` query value.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let requirements = text
            .split(',')
            .map(|term| {
                let term = term.trim();
                let (field, negated, value) = if let Some((f, v)) = term.split_once("!=") {
                    (f, true, v)
                } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('='))
                {
                    (f, false, v)
                } else {
                    return Err(SelectorError(format!(
                        "invalid field selector term {term:?}"
                    )));
                };
                let field = match field.trim() {
                    "metadata.name" => Field::Name,
                    "metadata.namespace" => Field::Namespace,
                    other => {
                        return Err(SelectorError(format!("field label not supported: {other}")));
                    }
                };
                Ok(FieldRequirement {
                    field,
                    negated,
                    value: value.trim().to_owned(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { requirements })
    }

    /// Whether an object satisfies every term.
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let pointer = match r.field {
                Field::Name => "/metadata/name",
                Field::Namespace => "/metadata/namespace",
            };
            let actual = object
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or("");
            (actual == r.value) != r.negated
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parses_kube_proxy_selector() {
        let s = LabelSelector::parse(
            "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless",
        )
        .expect("parses");
        assert_eq!(
            s.requirements,
            vec![
                Requirement::NotExists("service.kubernetes.io/service-proxy-name".into()),
                Requirement::NotExists("service.kubernetes.io/headless".into()),
            ]
        );
        assert!(s.matches_labels(&labels(&[("app", "web")])));
        assert!(!s.matches_labels(&labels(&[("service.kubernetes.io/headless", "")])));
        assert!(!s.matches_labels(&labels(&[(
            "service.kubernetes.io/service-proxy-name",
            "other"
        )])));
    }

    #[test]
    fn parses_every_form() {
        let s =
            LabelSelector::parse("a=1, b==2,c!=3,d,!e,f in (x, y),g notin (z)").expect("parses");
        assert_eq!(
            s.requirements,
            vec![
                Requirement::Equals("a".into(), "1".into()),
                Requirement::Equals("b".into(), "2".into()),
                Requirement::NotEquals("c".into(), "3".into()),
                Requirement::Exists("d".into()),
                Requirement::NotExists("e".into()),
                Requirement::In("f".into(), vec!["x".into(), "y".into()]),
                Requirement::NotIn("g".into(), vec!["z".into()]),
            ]
        );
        let all = labels(&[("a", "1"), ("b", "2"), ("d", ""), ("f", "y")]);
        assert!(s.matches_labels(&all));
        // `!=` and `notin` hold for an absent label, fail for the named value.
        let mut other = all.clone();
        other.insert("c".into(), "3".into());
        assert!(!s.matches_labels(&other));
        let mut other = all.clone();
        other.insert("g".into(), "z".into());
        assert!(!s.matches_labels(&other));
        // `in` needs the label.
        let mut other = all;
        other.remove("f");
        assert!(!s.matches_labels(&other));
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = LabelSelector::parse("").expect("parses");
        assert!(s.matches(&json!({"metadata": {"name": "x"}})));
        assert!(
            FieldSelector::parse("")
                .expect("parses")
                .matches(&json!({}))
        );
    }

    #[test]
    fn rejects_malformed_selectors() {
        for bad in ["a=(", "a in x", "a in (x", "=x", "a b", "!", "a=b c"] {
            assert!(
                LabelSelector::parse(bad).is_err(),
                "{bad:?} should not parse"
            );
        }
        assert!(FieldSelector::parse("spec.nodeName=a").is_err());
        assert!(FieldSelector::parse("metadata.name").is_err());
    }

    #[test]
    fn matches_object_labels_and_fields() {
        let obj = json!({"metadata": {"name": "n1", "namespace": "ns", "labels": {"zone": "a"}}});
        assert!(
            LabelSelector::parse("zone=a")
                .expect("parses")
                .matches(&obj)
        );
        assert!(
            !LabelSelector::parse("zone=b")
                .expect("parses")
                .matches(&obj)
        );
        let f = FieldSelector::parse("metadata.name=n1,metadata.namespace!=other").expect("parses");
        assert!(f.matches(&obj));
        let f = FieldSelector::parse("metadata.name==n2").expect("parses");
        assert!(!f.matches(&obj));
    }
}
