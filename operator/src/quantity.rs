//! Kubernetes quantities as exact integers of milli-units, so usage can be summed and
//! compared ("100m" + "0.9" = "1", "512Mi" + "512Mi" = "1Gi").
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A quantity in thousandths of its unit (millicores, millibytes, milli-pods).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Milli(pub i128);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a Kubernetes quantity")]
pub struct ParseError(pub String);

const BINARY: [(&str, i128); 6] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("Ei", 1 << 60),
];

impl Milli {
    pub fn parse(q: &str) -> Result<Milli, ParseError> {
        let err = || ParseError(q.to_string());
        let q = q.trim();
        let split = q
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
            .unwrap_or(q.len());
        let (num, suffix) = q.split_at(split);
        // Scale as a power of ten (decimal suffixes, exponents) or a binary multiplier.
        let (pow10, mult): (i32, i128) = match suffix {
            "" => (0, 1),
            "n" => (-9, 1),
            "u" => (-6, 1),
            "m" => (-3, 1),
            "k" => (3, 1),
            "M" => (6, 1),
            "G" => (9, 1),
            "T" => (12, 1),
            "P" => (15, 1),
            "E" => (18, 1),
            s if s.starts_with(['e', 'E']) => (s[1..].parse::<i32>().map_err(|_| err())?, 1),
            s => (
                0,
                BINARY
                    .iter()
                    .find(|(k, _)| *k == s)
                    .map(|(_, v)| *v)
                    .ok_or_else(err)?,
            ),
        };
        let negative = num.starts_with('-');
        let num = num.trim_start_matches(['+', '-']);
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() && frac.is_empty()
            || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
        {
            return Err(err());
        }
        let digits: i128 = format!("{int}{frac}").parse().map_err(|_| err())?;
        // value = digits * 10^(pow10 - len(frac)) * mult, in milli-units: one more 10^3.
        let exp = pow10 - frac.len() as i32 + 3;
        let scaled = digits.checked_mul(mult).ok_or_else(err)?;
        let value = if exp >= 0 {
            scaled
                .checked_mul(10i128.checked_pow(exp as u32).ok_or_else(err)?)
                .ok_or_else(err)?
        } else {
            // Round up, as Kubernetes does for sub-milli precision.
            let d = 10i128.checked_pow((-exp) as u32).ok_or_else(err)?;
            (scaled + d - 1) / d
        };
        Ok(Milli(if negative { -value } else { value }))
    }

    pub fn of(q: &Quantity) -> Result<Milli, ParseError> {
        Milli::parse(&q.0)
    }

    /// The canonical text: binary suffixes for byte-sized whole numbers, `m` for fractions.
    pub fn to_quantity(self, bytes: bool) -> Quantity {
        let v = self.0;
        if v % 1000 != 0 {
            return Quantity(format!("{v}m"));
        }
        let units = v / 1000;
        if bytes && units != 0 {
            for (suffix, mult) in BINARY.iter().rev() {
                if units % mult == 0 {
                    return Quantity(format!("{}{suffix}", units / mult));
                }
            }
        }
        Quantity(units.to_string())
    }
}

/// Whether a ResourceQuota resource name counts bytes (memory, storage).
pub fn is_bytes(resource: &str) -> bool {
    resource.contains("memory") || resource.contains("storage")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_kubernetes_accepts() {
        for (text, milli) in [
            ("100m", 100),
            ("1", 1000),
            ("1.5", 1500),
            ("0.1", 100),
            ("2k", 2_000_000),
            ("1Ki", 1_024_000),
            ("8Gi", 8 * (1 << 30) * 1000),
            ("1e3", 1_000_000),
            ("250n", 1),
        ] {
            assert_eq!(Milli::parse(text), Ok(Milli(milli)), "{text}");
        }
        assert!(Milli::parse("lots").is_err());
        assert!(Milli::parse("").is_err());
    }

    #[test]
    fn formats_back_readably() {
        assert_eq!(Milli(1500).to_quantity(false).0, "1500m");
        assert_eq!(Milli(2000).to_quantity(false).0, "2");
        assert_eq!(
            Milli::parse("512Mi").map(|m| Milli(m.0 * 2).to_quantity(true).0),
            Ok("1Gi".to_string())
        );
    }
}
