//! Which function library may replace which: the guard every load goes
//! through (at start, after a pub/sub reconnect, on `Function not found`,
//! and on `/readyz`).
//!
//! All nodes on one Redis share one library `herald`, and `FUNCTION LOAD
//! REPLACE` has no compare-and-set, so without a rule an old node that
//! reconnects after a blip puts its old code back under every new node.
//! The rule, by the version each library returns from `herald_version`
//! (`r<revision>:<build>+<code hash>:<settings>`):
//!
//! * nothing loaded: load ours (without `REPLACE`, so that of two nodes
//!   loading at once the second sees the first's and judges it);
//! * a lower revision (one without `r<n>:` predates revisions: 0): replace;
//! * a higher revision: never replace; this node is not ready;
//! * the same revision and code built from other settings: replace only at
//!   start (an operator rolling out a config change restarts the nodes, and
//!   the one started last wins), never later, or two differently configured
//!   nodes would take turns; the node whose library is not loaded is not
//!   ready.
//!
//! The build (crate version) is not compared: a release that leaves the
//! library and the settings alone must not make every older node unready.
//! The check and the load are two commands, so two nodes of different
//! revisions can still cross (the older checks, the newer loads, the older
//! loads); `/readyz` closes that by replacing an older library it finds.

use std::cmp::Ordering;

/// When a load is considered, which decides what may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occasion {
    /// The node starts: its settings win over a same-revision library's.
    Start,
    /// A reconnect, a missing function, a readiness check: only a missing
    /// or older library is replaced.
    Repair,
}

/// What to do about the loaded library.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The library this node needs is loaded.
    Ours,
    /// Nothing is loaded: load ours, without replacing one that appears.
    Load,
    /// Replace the loaded library with ours.
    Replace,
    /// Keep the loaded library; this node is not ready, for this reason.
    Foreign(String),
}

/// A version string taken apart. Parsing never fails: what does not parse
/// counts as revision 0, older than any library that has a revision.
#[derive(Debug, PartialEq, Eq)]
struct Version<'a> {
    revision: u32,
    code: &'a str,
    settings: &'a str,
}

impl<'a> Version<'a> {
    fn parse(version: &'a str) -> Self {
        let Some((revision, rest)) = version.strip_prefix('r').and_then(|v| v.split_once(':')) else {
            return Version { revision: 0, code: "", settings: "" };
        };
        let Ok(revision) = revision.parse() else { return Version { revision: 0, code: "", settings: "" } };
        // From the right: the build (a crate version) is the only part that
        // could hold a `+`, and neither the hash nor the settings hold a `:`.
        let (head, settings) = rest.rsplit_once(':').unwrap_or((rest, ""));
        let code = head.rsplit_once('+').map_or("", |(_, code)| code);
        Version { revision, code, settings }
    }
}

/// Judges the `loaded` version (`None`: no library) against `ours`.
/// `keys` names the settings in the order the version lists them.
pub fn judge(loaded: Option<&str>, ours: &str, keys: &[&str], occasion: Occasion) -> Verdict {
    let Some(loaded) = loaded else { return Verdict::Load };
    let (theirs, mine) = (Version::parse(loaded), Version::parse(ours));
    match theirs.revision.cmp(&mine.revision) {
        Ordering::Less => Verdict::Replace,
        Ordering::Greater => Verdict::Foreign(format!(
            "Redis holds the function library `{loaded}` (revision {}), newer than this node's `{ours}` \
             (revision {}); this node will not replace it: upgrade this node",
            theirs.revision, mine.revision
        )),
        Ordering::Equal if theirs.code == mine.code && theirs.settings == mine.settings => Verdict::Ours,
        Ordering::Equal if occasion == Occasion::Start => Verdict::Replace,
        Ordering::Equal if theirs.code != mine.code => Verdict::Foreign(format!(
            "Redis holds the function library `{loaded}`, whose code differs from this node's `{ours}` at the \
             same revision {} (functions.lua changed without a new LIBRARY_REVISION); this node will not \
             replace it: run builds of one code per revision",
            mine.revision
        )),
        Ordering::Equal => Verdict::Foreign(format!(
            "Redis holds the function library `{loaded}`, loaded by a node with other settings than this \
             node's `{ours}` ({}); the node started last loads its own: give every node on this Redis the \
             same settings",
            differences(theirs.settings, mine.settings, keys)
        )),
    }
}

/// "history.max_len: 200 loaded, 100 here; …"
fn differences(theirs: &str, mine: &str, keys: &[&str]) -> String {
    let (theirs, mine): (Vec<&str>, Vec<&str>) = (theirs.split(',').collect(), mine.split(',').collect());
    if theirs.len() != mine.len() || mine.len() != keys.len() {
        return "its settings list differs".into();
    }
    keys.iter()
        .zip(theirs.iter().zip(&mine))
        .filter(|(_, (t, m))| t != m)
        .map(|(key, (t, m))| format!("{key}: {t} loaded, {m} here"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::{Occasion::*, *};

    const KEYS: [&str; 2] = ["history.max_len", "history.max_age_ms"];
    const OURS: &str = "r2:0.1.0+aaaa1111:100,5000";

    fn judge_both(loaded: Option<&str>) -> (Verdict, Verdict) {
        (judge(loaded, OURS, &KEYS, Start), judge(loaded, OURS, &KEYS, Repair))
    }

    #[test]
    fn parses_every_part_and_calls_the_unparsable_revision_0() {
        assert_eq!(Version::parse(OURS), Version { revision: 2, code: "aaaa1111", settings: "100,5000" });
        assert_eq!(Version::parse("r3:1.0.0-rc+x+bbbb2222:7").code, "bbbb2222");
        for old in ["0.1.0+aaaa1111:100,5000", "", "r:x", "rx:0.1.0+aaaa1111:1"] {
            assert_eq!(Version::parse(old).revision, 0, "{old}");
        }
    }

    #[test]
    fn loads_when_missing_and_replaces_only_an_older_revision() {
        assert_eq!(judge_both(None), (Verdict::Load, Verdict::Load));
        for older in ["0.1.0+aaaa1111:100,5000", "r1:0.2.0+cccc3333:1,1", "garbage"] {
            assert_eq!(judge_both(Some(older)), (Verdict::Replace, Verdict::Replace), "{older}");
        }
        let newer = "r3:0.0.1+dddd4444:100,5000";
        for verdict in <[Verdict; 2]>::from(judge_both(Some(newer))) {
            let Verdict::Foreign(why) = verdict else { panic!("a newer library is replaced: {verdict:?}") };
            assert!(why.contains(newer) && why.contains(OURS) && why.contains("upgrade this node"), "{why}");
        }
    }

    #[test]
    fn the_same_library_from_another_build_is_ours() {
        assert_eq!(judge_both(Some(OURS)), (Verdict::Ours, Verdict::Ours));
        assert_eq!(judge_both(Some("r2:0.9.9+aaaa1111:100,5000")), (Verdict::Ours, Verdict::Ours));
    }

    #[test]
    fn other_settings_at_one_revision_are_replaced_only_at_start_and_named() {
        let (at_start, later) = judge_both(Some("r2:0.1.0+aaaa1111:200,5000"));
        assert_eq!(at_start, Verdict::Replace);
        let Verdict::Foreign(why) = later else { panic!("replaced after start: {later:?}") };
        assert!(why.contains("history.max_len: 200 loaded, 100 here") && !why.contains("max_age"), "{why}");

        let (at_start, later) = judge_both(Some("r2:0.1.0+eeee5555:100,5000"));
        assert_eq!(at_start, Verdict::Replace);
        let Verdict::Foreign(why) = later else { panic!("replaced after start: {later:?}") };
        assert!(why.contains("LIBRARY_REVISION"), "{why}");
    }
}
