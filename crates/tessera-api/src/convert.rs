//! Conversions between protobuf well-known types and the domain's JSON and
//! seconds.

use tonic::Status;

/// JSON of a protobuf `Struct` (numbers become JSON numbers; a whole number
/// stays an integer so `"n": 3` round-trips as 3, not 3.0).
pub fn struct_to_json(s: prost_types::Struct) -> serde_json::Map<String, serde_json::Value> {
    s.fields
        .into_iter()
        .map(|(k, v)| (k, value_to_json(v)))
        .collect()
}

fn value_to_json(v: prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    use serde_json::Value as J;
    match v.kind {
        None | Some(Kind::NullValue(_)) => J::Null,
        Some(Kind::BoolValue(b)) => J::Bool(b),
        Some(Kind::NumberValue(n)) =>
        {
            #[allow(clippy::cast_possible_truncation, clippy::float_cmp)]
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                J::from(n as i64)
            } else {
                serde_json::Number::from_f64(n).map_or(J::Null, J::Number)
            }
        }
        Some(Kind::StringValue(s)) => J::String(s),
        Some(Kind::ListValue(l)) => J::Array(l.values.into_iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => J::Object(struct_to_json(s)),
    }
}

/// A protobuf `Struct` of a JSON object.
pub fn json_to_struct(m: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: m
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        J::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// Seconds of a protobuf `Duration` field: whole seconds, positive.
pub fn duration_secs(field: &str, d: Option<prost_types::Duration>) -> Result<Option<i64>, Status> {
    match d {
        None => Ok(None),
        Some(d) if d.nanos != 0 => Err(crate::invalid(field, "must be whole seconds")),
        Some(d) if d.seconds <= 0 => Err(crate::invalid(field, "must be positive")),
        Some(d) => Ok(Some(d.seconds)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_through_struct() {
        let v = json!({"n": 3, "f": 1.5, "s": "x", "b": true, "z": null, "l": [1, "a"], "o": {"k": -2}});
        let m = v.as_object().unwrap();
        assert_eq!(
            serde_json::Value::Object(struct_to_json(json_to_struct(m))),
            v
        );
    }

    #[test]
    fn durations_are_whole_positive_seconds() {
        let d = |seconds, nanos| Some(prost_types::Duration { seconds, nanos });
        assert_eq!(duration_secs("t", None).unwrap(), None);
        assert_eq!(duration_secs("t", d(60, 0)).unwrap(), Some(60));
        assert!(duration_secs("t", d(0, 0)).is_err());
        assert!(duration_secs("t", d(1, 5)).is_err());
    }
}

/// Parses an RFC 3339 time (any offset) or whole Unix seconds.
pub fn parse_time(text: &str) -> Result<tessera_domain::clock::UnixTime, String> {
    if let Ok(n) = text.parse::<i64>() {
        return Ok(n);
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(time::OffsetDateTime::unix_timestamp)
        .map_err(|_| {
            format!("{text:?} is neither Unix seconds nor an RFC 3339 time (2030-01-01T00:00:00Z)")
        })
}

#[cfg(test)]
mod time_tests {
    use super::*;

    #[test]
    fn times_are_parsed_from_rfc3339_or_seconds() {
        assert_eq!(parse_time("2030-01-01T00:00:00Z"), Ok(1_893_456_000));
        assert_eq!(parse_time("2030-01-01T01:00:00+01:00"), Ok(1_893_456_000));
        assert_eq!(parse_time("1893456000"), Ok(1_893_456_000));
        assert!(parse_time("tomorrow").is_err());
    }
}
