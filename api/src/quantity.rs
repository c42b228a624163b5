//! Kubernetes resource quantities (`0.5`, `"500m"`, `5Gi`, `5120Mi`, `1e3`).
//!
//! A [`Quantity`] keeps the form the user wrote (number or string), so what is
//! stored and served back is what was applied: GitOps diffs stay empty. The value
//! is parsed on demand into an exact integer count of milli-units
//! ([`Quantity::milli`]); invalid text is kept and reported by validation with its
//! field path instead of failing deserialization.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a quantity could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The text does not follow the Kubernetes quantity grammar.
    #[error("quantities must match the regular expression '{QUANTITY_PATTERN}'")]
    Syntax,
    /// The value does not fit Corral's exact representation.
    #[error("quantity is too large")]
    Overflow,
    /// A JSON number that is not finite.
    #[error("quantity must be a finite number")]
    NotFinite,
}

/// The grammar of a quantity, as published in the CRD schema.
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// How the quantity was written.
#[derive(Debug, Clone)]
enum Repr {
    Int(i64),
    Float(f64),
    Text(String),
}

/// A resource amount in the Kubernetes quantity notation.
#[derive(Debug, Clone)]
pub struct Quantity(Repr);

impl Quantity {
    /// A whole number of units (`cpus: 2`, a byte count).
    pub fn from_units(units: i64) -> Self {
        Quantity(Repr::Int(units))
    }

    /// A quantity written as text, kept verbatim (`"500m"`, `"5Gi"`).
    pub fn from_text(text: impl Into<String>) -> Self {
        Quantity(Repr::Text(text.into()))
    }

    /// The amount in thousandths of the unit (millicores, millibytes), rounded up
    /// as Kubernetes does for amounts finer than a milli-unit.
    pub fn milli(&self) -> Result<i64, QuantityError> {
        match &self.0 {
            Repr::Int(v) => v.checked_mul(1000).ok_or(QuantityError::Overflow),
            Repr::Float(f) => {
                if !f.is_finite() {
                    return Err(QuantityError::NotFinite);
                }
                // Go through the shortest decimal text so 0.1 is exactly 100m.
                parse_milli(&format!("{f}"))
            }
            Repr::Text(s) => parse_milli(s),
        }
    }

    /// The amount rounded up to whole units (cores, bytes).
    pub fn units_ceil(&self) -> Result<i64, QuantityError> {
        let m = self.milli()?;
        Ok(m.div_euclid(1000) + i64::from(m.rem_euclid(1000) != 0))
    }

    /// The form the user wrote, for messages.
    pub fn as_written(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Int(v) => write!(f, "{v}"),
            Repr::Float(v) => write!(f, "{v}"),
            Repr::Text(s) => f.write_str(s),
        }
    }
}

/// Two quantities are equal when they denote the same amount (`1` == `"1000m"`).
/// Unparseable quantities compare by their text.
impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        match (self.milli(), other.milli()) {
            (Ok(a), Ok(b)) => a == b,
            _ => self.to_string() == other.to_string(),
        }
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Repr::Int(v) => s.serialize_i64(*v),
            Repr::Float(v) => s.serialize_f64(*v),
            Repr::Text(t) => s.serialize_str(t),
        }
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity: a number or a string such as \"500m\" or \"5Gi\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity(Repr::Int(v)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                match i64::try_from(v) {
                    Ok(v) => Ok(Quantity(Repr::Int(v))),
                    Err(_) => Ok(Quantity(Repr::Text(v.to_string()))),
                }
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                Ok(Quantity(Repr::Float(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity(Repr::Text(v.to_owned())))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A Kubernetes quantity: a number of units (cpus: 0.5) or text with a suffix (\"500m\", \"5Gi\").",
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": true
        })
    }
}

/// Parses the quantity grammar into exact milli-units, rounding up below a milli.
fn parse_milli(text: &str) -> Result<i64, QuantityError> {
    let s = text.trim();
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(num_end);
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() || frac_part.contains('.') {
        return Err(QuantityError::Syntax);
    }
    // Scale: value = digits * 2^bin * 10^dec.
    let (bin_exp, dec_exp): (u32, i32) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        exp if exp.starts_with(['e', 'E']) => {
            let e = &exp[1..];
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(QuantityError::Syntax);
            }
            let v: i32 = e.parse().map_err(|_| QuantityError::Overflow)?;
            (0, v)
        }
        _ => return Err(QuantityError::Syntax),
    };
    // mantissa = int_part.frac_part as an integer, with a decimal exponent.
    let mut mantissa: i128 = 0;
    for b in int_part.bytes().chain(frac_part.bytes()) {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(i128::from(b - b'0')))
            .ok_or(QuantityError::Overflow)?;
    }
    let frac_len = i32::try_from(frac_part.len()).map_err(|_| QuantityError::Overflow)?;
    // value in milli = mantissa * 2^bin * 10^(dec + 3 - frac_len)
    let mut value = mantissa
        .checked_mul(1i128 << bin_exp)
        .ok_or(QuantityError::Overflow)?;
    let exp10 = dec_exp + 3 - frac_len;
    if value == 0 {
        return Ok(0);
    }
    if exp10 >= 0 {
        let scale = u32::try_from(exp10)
            .ok()
            .and_then(|e| 10i128.checked_pow(e))
            .ok_or(QuantityError::Overflow)?;
        value = value.checked_mul(scale).ok_or(QuantityError::Overflow)?;
    } else {
        // Anything finer than 10^-38 of a milli-unit rounds up to one milli-unit.
        value = match u32::try_from(-exp10)
            .ok()
            .and_then(|e| 10i128.checked_pow(e))
        {
            Some(divisor) => value / divisor + i128::from(value % divisor != 0),
            None => 1,
        };
    }
    let value = if negative { -value } else { value };
    i64::try_from(value).map_err(|_| QuantityError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kubernetes_forms_into_milli_units() {
        let cases: &[(&str, i64)] = &[
            ("1", 1000),
            ("0.5", 500),
            ("500m", 500),
            ("1.5", 1500),
            (".5", 500),
            ("5Gi", 5 * 1024 * 1024 * 1024 * 1000),
            ("5120Mi", 5120 * 1024 * 1024 * 1000),
            ("1k", 1_000_000),
            ("1e3", 1_000_000),
            ("1E-3", 1),
            ("1n", 1),
            ("0", 0),
            ("-2", -2000),
            ("+2", 2000),
            ("2.", 2000),
        ];
        for (text, want) in cases {
            assert_eq!(Quantity::from_text(*text).milli(), Ok(*want), "{text}");
        }
    }

    #[test]
    fn rejects_text_outside_the_grammar() {
        for text in [
            "", "abc", "1x", "1.2.3", "Gi", "1e", "1e+", "--1", "1 Gi", ".",
        ] {
            assert!(Quantity::from_text(text).milli().is_err(), "{text}");
        }
    }

    #[test]
    fn numbers_and_text_of_the_same_amount_are_equal() {
        let half: Quantity = serde_json::from_str("0.5").expect("number");
        assert_eq!(half, Quantity::from_text("500m"));
        let one: Quantity = serde_json::from_str("1").expect("int");
        assert_eq!(one, Quantity::from_text("1000m"));
        assert_eq!(one.units_ceil(), Ok(1));
        assert_eq!(Quantity::from_text("1500m").units_ceil(), Ok(2));
    }

    #[test]
    fn keeps_the_form_the_user_wrote() {
        for json in ["0.5", "2", "\"500m\"", "\"5Gi\""] {
            let q: Quantity = serde_json::from_str(json).expect("parse");
            assert_eq!(serde_json::to_string(&q).expect("ser"), json);
        }
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        assert_eq!(
            Quantity::from_text("9999999999999999999999Ei").milli(),
            Err(QuantityError::Overflow)
        );
        assert!(Quantity::from_units(i64::MAX).milli().is_err());
        assert!(Quantity::from_text("1e999999999999").milli().is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_errors_without_panicking(s in "\\PC{0,24}") {
            let _ = Quantity::from_text(s).milli();
        }

        #[test]
        fn whole_units_round_trip(units in 0i64..1_000_000_000_000) {
            let q = Quantity::from_text(units.to_string());
            proptest::prop_assert_eq!(q.milli(), Ok(units * 1000));
        }
    }
}
