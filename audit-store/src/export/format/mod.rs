//! The formats an export job writes its records in, one line per record, and CSV for the
//! query API's export.

pub(crate) mod csv;
mod fields;
mod logpush;
mod ocsf;

use std::fmt;
use std::str::FromStr;

use crate::model::PageRow;

/// How each exported record is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// The record's own JSON, exactly as stored (NDJSON).
    #[default]
    Ndjson,
    /// Cloudflare Logpush's `audit_logs_v2` field names (`AccountID`, `ActionTimestamp`,
    /// `ActorEmail`, `Raw`, ...), one JSON object per line.
    Logpush,
    /// OCSF 1.8.0 API Activity (class 6003) events, one per line.
    Ocsf,
}

impl Format {
    /// Every format.
    pub const ALL: [Self; 3] = [Self::Ndjson, Self::Logpush, Self::Ocsf];

    /// The format's name in configuration: `ndjson`, `logpush`, `ocsf`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ndjson => "ndjson",
            Self::Logpush => "logpush",
            Self::Ocsf => "ocsf",
        }
    }

    /// The media type of a body of such lines.
    pub fn content_type(self) -> &'static str {
        "application/x-ndjson"
    }

    /// Appends `row`'s line, newline included, to `out`.
    ///
    /// # Errors
    ///
    /// When the stored record is not the JSON of a record (for the formats that map it).
    pub fn write_line(self, row: &PageRow, out: &mut String) -> Result<(), FormatError> {
        match self {
            Self::Ndjson => out.push_str(&row.record),
            Self::Logpush => logpush::write(row, out)?,
            Self::Ocsf => ocsf::write(row, out)?,
        }
        out.push('\n');
        Ok(())
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A format name that is not one of [`Format::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown export format {given:?}: expected one of {expected}")]
pub struct UnknownFormat {
    given: String,
    expected: String,
}

impl FromStr for Format {
    type Err = UnknownFormat;

    /// ```
    /// use audit_store::export::Format;
    ///
    /// assert_eq!("ndjson".parse::<Format>(), Ok(Format::Ndjson));
    /// assert_eq!("ocsf".parse::<Format>(), Ok(Format::Ocsf));
    /// assert!("xml".parse::<Format>().unwrap_err().to_string().contains("\"xml\""));
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| UnknownFormat {
                given: s.chars().take(64).collect(),
                expected: Self::ALL.map(Format::name).join(", "),
            })
    }
}

/// A stored record that a format could not map.
#[derive(Debug, thiserror::Error)]
#[error("record {id} is not a readable audit record: {reason}")]
pub struct FormatError {
    id: uuid::Uuid,
    reason: String,
}

impl FormatError {
    pub(crate) fn new(id: uuid::Uuid, reason: &str) -> Self {
        Self {
            id,
            reason: reason.chars().take(200).collect(),
        }
    }
}
