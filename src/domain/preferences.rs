//! A user's say over what reaches them (SPEC §6).
//!
//! `in_app: false` for a category means notifications of that category are
//! neither stored nor streamed for the user. `push` and `quiet_hours` only
//! concern Web Push. A document is validated once, with errors that name the
//! field, and stored whole.

use std::collections::BTreeMap;

use jiff::{Timestamp, civil::Time};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channels {
    #[serde(default = "yes")]
    pub in_app: bool,
    #[serde(default = "yes")]
    pub push: bool,
}

fn yes() -> bool {
    true
}

impl Default for Channels {
    fn default() -> Self {
        Self { in_app: true, push: true }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// `HH:MM`, in `timezone`.
    pub start: String,
    pub end: String,
    /// An IANA time zone name, e.g. `Asia/Seoul`.
    pub timezone: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    #[serde(default)]
    pub default: Channels,
    #[serde(default)]
    pub categories: BTreeMap<String, Channels>,
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
    #[serde(default = "yes")]
    pub sound: bool,
}

impl Default for Preferences {
    fn default() -> Self {
        Self { default: Channels::default(), categories: BTreeMap::new(), quiet_hours: None, sound: true }
    }
}

/// Most categories a document may name.
pub const MAX_CATEGORIES: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PreferencesError {
    pub field: String,
    pub message: String,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> PreferencesError {
    PreferencesError { field: field.into(), message: message.into() }
}

fn parse_hh_mm(raw: &str) -> Option<Time> {
    let (h, m) = raw.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    Time::new(h.parse().ok()?, m.parse().ok()?, 0, 0).ok()
}

impl Preferences {
    /// Parses a document, naming the offending field on error (`422`).
    pub fn parse(json: &[u8]) -> Result<Self, PreferencesError> {
        let de = &mut serde_json::Deserializer::from_slice(json);
        let prefs: Preferences = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let field = if path == "." { "preferences".to_owned() } else { path };
            bad(field, inner.to_string())
        })?;
        prefs.validate()?;
        Ok(prefs)
    }

    fn validate(&self) -> Result<(), PreferencesError> {
        if self.categories.len() > MAX_CATEGORIES {
            return Err(bad("categories", format!("at most {MAX_CATEGORIES} categories")));
        }
        for name in self.categories.keys() {
            let ok = !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
            if !ok {
                return Err(bad(
                    format!("categories.{name}"),
                    "a category is the part of a type before its first `.`: a-z 0-9 _ -",
                ));
            }
        }
        if let Some(q) = &self.quiet_hours {
            for (field, value) in [("quiet_hours.start", &q.start), ("quiet_hours.end", &q.end)] {
                if parse_hh_mm(value).is_none() {
                    return Err(bad(field, format!("`{value}` is not a time of day as HH:MM")));
                }
            }
            if jiff::tz::db().get(&q.timezone).is_err() {
                return Err(bad("quiet_hours.timezone", format!("`{}` is not an IANA time zone", q.timezone)));
            }
        }
        Ok(())
    }

    /// The channels for a notification type (its category, else the default).
    pub fn channels_for(&self, kind: &str) -> Channels {
        let category = kind.split('.').next().unwrap_or(kind);
        self.categories.get(category).copied().unwrap_or(self.default)
    }

    /// Whether `at` falls in the quiet hours, in the user's time zone (so
    /// daylight saving time is the zone's own). A window may wrap midnight.
    pub fn in_quiet_hours(&self, at: Timestamp) -> bool {
        let Some(q) = &self.quiet_hours else { return false };
        let (Some(start), Some(end), Ok(tz)) =
            (parse_hh_mm(&q.start), parse_hh_mm(&q.end), jiff::tz::db().get(&q.timezone))
        else {
            return false;
        };
        let now = at.to_zoned(tz).time();
        if start <= end { start <= now && now < end } else { now >= start || now < end }
    }

    /// `in_app` per category, plus the default under `*`: what the publish
    /// path needs to drop or keep a notification.
    pub fn in_app_flags(&self) -> Vec<(String, bool)> {
        let mut flags = vec![("*".to_owned(), self.default.in_app)];
        flags.extend(self.categories.iter().map(|(k, v)| (k.clone(), v.in_app)));
        flags
    }
}

/// How far ahead [`Preferences::quiet_rule`] lists a zone's offset changes.
/// A rule is written whenever preferences are saved; past its last change
/// the last offset holds (zones rarely change their rules, and a user who
/// saves preferences gets a fresh one).
const QUIET_RULE_YEARS: i64 = 10;

impl Preferences {
    /// `push` per category, plus the default under `*`.
    pub fn push_flags(&self) -> Vec<(String, bool)> {
        let mut flags = vec![("*".to_owned(), self.default.push)];
        flags.extend(self.categories.iter().map(|(k, v)| (k.clone(), v.push)));
        flags
    }

    /// The quiet hours as a rule a Redis function can apply without a time
    /// zone database: `"<start minute> <end minute> <offset s> [<from s>
    /// <offset s>]..."`, the window in minutes of the local day, then the
    /// zone's UTC offset at `now` and each change of it over the next
    /// [`QUIET_RULE_YEARS`] (unix seconds it takes effect, the new offset).
    /// `functions.lua`'s `in_quiet_hours` reads it and answers as
    /// [`Preferences::in_quiet_hours`] does. `None` without quiet hours.
    pub fn quiet_rule(&self, now: Timestamp) -> Option<String> {
        let q = self.quiet_hours.as_ref()?;
        let (start, end) = (parse_hh_mm(&q.start)?, parse_hh_mm(&q.end)?);
        let tz = jiff::tz::db().get(&q.timezone).ok()?;
        let minutes = |t: Time| i32::from(t.hour()) * 60 + i32::from(t.minute());
        let mut rule = format!("{} {} {}", minutes(start), minutes(end), tz.to_offset(now).seconds());
        let horizon = now.checked_add(jiff::SignedDuration::from_hours(24 * 365 * QUIET_RULE_YEARS)).ok()?;
        for change in tz.following(now).take_while(|t| t.timestamp() < horizon) {
            rule.push_str(&format!(" {} {}", change.timestamp().as_second(), change.offset().seconds()));
        }
        Some(rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Preferences, PreferencesError> {
        Preferences::parse(json.as_bytes())
    }

    #[test]
    fn the_spec_example_parses() {
        let p = parse(
            r#"{"default":{"in_app":true,"push":true},"categories":{"marketing":{"in_app":true,"push":false}},
                "quiet_hours":{"start":"22:00","end":"07:00","timezone":"Asia/Seoul"},"sound":true}"#,
        )
        .unwrap();
        assert!(!p.channels_for("marketing.sale").push);
        assert!(p.channels_for("comment.mention").push);
    }

    #[test]
    fn errors_name_the_field() {
        let field = |json: &str| parse(json).unwrap_err().field;
        assert_eq!(field(r#"{"sound":"loud"}"#), "sound");
        assert_eq!(field(r#"{"unknown":1}"#), "unknown");
        assert_eq!(field(r#"{"categories":{"marketing":{"in_app":1}}}"#), "categories.marketing.in_app");
        assert_eq!(field(r#"{"categories":{"marketing":{"sms":true}}}"#), "categories.marketing.sms");
        assert_eq!(field(r#"{"quiet_hours":{"start":"25:00","end":"07:00","timezone":"UTC"}}"#), "quiet_hours.start");
        assert_eq!(field(r#"{"quiet_hours":{"start":"22:00","end":"7:00","timezone":"UTC"}}"#), "quiet_hours.end");
        assert_eq!(
            field(r#"{"quiet_hours":{"start":"22:00","end":"07:00","timezone":"Mars/Olympus"}}"#),
            "quiet_hours.timezone"
        );
        assert_eq!(field(r#"{"categories":{"Bad Name":{}}}"#), "categories.Bad Name");
    }

    /// What functions.lua's in_quiet_hours computes from the rule, here in
    /// Rust, so the rule is checked against the zone database at many
    /// instants (tests/it/push.rs checks the Lua side on real Redis).
    fn quiet_by_rule(rule: &str, at: Timestamp) -> bool {
        let n: Vec<i64> = rule.split(' ').map(|v| v.parse().unwrap()).collect();
        let now = at.as_second();
        let mut offset = n[2];
        for pair in n[3..].chunks(2) {
            if now < pair[0] {
                break;
            }
            offset = pair[1];
        }
        let minute = (now + offset).rem_euclid(86_400) / 60;
        if n[0] <= n[1] { minute >= n[0] && minute < n[1] } else { minute >= n[0] || minute < n[1] }
    }

    #[test]
    fn the_quiet_rule_agrees_with_the_zone_database() {
        let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        for (zone, window) in [
            ("America/New_York", ("22:00", "07:00")),
            ("Asia/Seoul", ("09:30", "17:45")),
            ("Europe/London", ("00:00", "06:00")),
        ] {
            let json =
                format!(r#"{{"quiet_hours":{{"start":"{}","end":"{}","timezone":"{zone}"}}}}"#, window.0, window.1);
            let p = parse(&json).unwrap();
            let rule = p.quiet_rule(start).unwrap();
            // Every 17 minutes over two years, across every DST change.
            let mut at = start;
            while at < "2028-01-01T00:00:00Z".parse().unwrap() {
                assert_eq!(quiet_by_rule(&rule, at), p.in_quiet_hours(at), "{zone} at {at}: rule {rule}");
                at = at.checked_add(jiff::SignedDuration::from_mins(17)).unwrap();
            }
        }
        assert_eq!(Preferences::default().quiet_rule(start), None);
    }

    #[test]
    fn quiet_hours_follow_the_zone_and_its_daylight_saving() {
        let p = parse(r#"{"quiet_hours":{"start":"22:00","end":"07:00","timezone":"America/New_York"}}"#).unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        // Winter (EST, UTC-5): 03:30 UTC is 22:30 local, quiet.
        assert!(p.in_quiet_hours(at("2026-01-15T03:30:00Z")));
        // Summer (EDT, UTC-4): 02:30 UTC is 22:30 local, quiet; 01:30 UTC is 21:30, not.
        assert!(p.in_quiet_hours(at("2026-07-15T02:30:00Z")));
        assert!(!p.in_quiet_hours(at("2026-07-15T01:30:00Z")));
        // The window wraps midnight: 06:59 local quiet, 07:00 not.
        assert!(p.in_quiet_hours(at("2026-07-15T10:59:00Z")));
        assert!(!p.in_quiet_hours(at("2026-07-15T11:00:00Z")));
    }
}
