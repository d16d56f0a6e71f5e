//! JSON read from files, with every object's keys unique.
//!
//! serde_json keeps the last value of a key an object names twice,
//! silently; other readers may keep the first. A header, index or config
//! naming a key twice is ambiguous, so reading it is an error.

use std::fmt;
use std::marker::PhantomData;

use indexmap::IndexMap;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;

/// Parses JSON text whose objects name each key once.
pub(crate) fn parse(bytes: &[u8]) -> serde_json::Result<Json> {
    serde_json::from_slice::<Strict>(bytes).map(|s| s.0)
}

/// Parses JSON text whose objects name each key once.
pub(crate) fn parse_str(text: &str) -> serde_json::Result<Json> {
    parse(text.as_bytes())
}

/// A JSON value whose objects, at every depth, name each key once.
struct Strict(Json);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Json, A::Error> {
        let items: IndexMap<String, Strict> = unique(map)?;
        Ok(Json::Object(
            items.into_iter().map(|(k, Strict(v))| (k, v)).collect(),
        ))
    }
}

/// Collects a map's entries, refusing a key named twice.
fn unique<'de, A: MapAccess<'de>, V: Deserialize<'de>>(
    mut map: A,
) -> Result<IndexMap<String, V>, A::Error> {
    let mut out = IndexMap::new();
    while let Some(key) = map.next_key::<String>()? {
        let value = map.next_value()?;
        if out.contains_key(&key) {
            return Err(de::Error::custom(format_args!(
                "the key {key:?} is named twice (ambiguous)"
            )));
        }
        out.insert(key, value);
    }
    Ok(out)
}

/// A JSON object, in file order, that names each key once.
pub(crate) struct UniqueMap<V>(pub IndexMap<String, V>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = IndexMap<String, V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                unique(map)
            }
        }
        d.deserialize_map(MapVisitor(PhantomData)).map(UniqueMap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_serde_json_does_and_repeated_keys_are_errors() {
        let text = br#"{"a": [1, -2, 2.5, "x", null, true, {"b": {}}], "c": 18446744073709551615}"#;
        assert_eq!(
            parse(text).unwrap(),
            serde_json::from_slice::<Json>(text).unwrap()
        );
        for bad in [&br#"{"a": 1, "a": 2}"#[..], br#"{"x": [{"k": 1, "k": 1}]}"#] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("named twice"), "{err}");
        }
        let err = serde_json::from_slice::<UniqueMap<Json>>(br#"{"w": 1, "w": 2}"#)
            .err()
            .unwrap();
        assert!(err.to_string().contains("\"w\" is named twice"), "{err}");
    }
}
