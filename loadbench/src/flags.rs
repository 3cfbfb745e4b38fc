//! The `--flag value` options of the three roles' command lines.

use std::str::FromStr;

use crate::BoxError;

/// A command line's options, in order.
pub(crate) struct Flags<'a> {
    args: std::slice::Iter<'a, String>,
}

impl<'a> Flags<'a> {
    pub(crate) fn new(args: &'a [String]) -> Self {
        Self { args: args.iter() }
    }

    /// The next option's name.
    pub(crate) fn flag(&mut self) -> Option<&'a str> {
        self.args.next().map(String::as_str)
    }

    /// The value of `flag`: the next argument.
    pub(crate) fn value(&mut self, flag: &str) -> Result<&'a str, BoxError> {
        self.flag()
            .ok_or_else(|| format!("{flag} needs a value").into())
    }

    /// The value of `flag`, parsed.
    pub(crate) fn parse<T>(&mut self, flag: &str) -> Result<T, BoxError>
    where
        T: FromStr,
        T::Err: Into<BoxError>,
    {
        self.value(flag)?.parse().map_err(Into::into)
    }

    /// The comma-separated values of `flag`, each read by `parse`.
    pub(crate) fn list<T>(
        &mut self,
        flag: &str,
        parse: impl Fn(&str) -> Result<T, BoxError>,
    ) -> Result<Vec<T>, BoxError> {
        self.value(flag)?.split(',').map(parse).collect()
    }
}
