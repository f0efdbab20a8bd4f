//! A model-based test of the two engines: random sequences of what users,
//! publishers and topic followers do, applied to the memory engine and to
//! the Redis engine side by side. The memory engine is the model; every
//! observable result must be the same from both, after each operation and
//! in the whole state at the end. Ids are compared by which publish gave
//! them (`#3` is this case's fourth new entry), since each engine takes its
//! own from the clock.
//!
//! Histories are kept short (`history.max_len`, `topics.max_len`), so that
//! trimming and the resets it causes are part of what is compared.

use std::collections::BTreeMap;

use herald::{
    domain::{Channels, EntryId, IdempotencyKey, NewNotification, NotificationLimits, Preferences, TopicName, UserId},
    engine::{
        AnyEngine, Engine, EngineError, HistoryPage, ListPage, ListQuery, PublishOutcome, ReadTarget, Reset,
        StoredEntry,
    },
};
use proptest::{
    collection::vec,
    prelude::*,
    test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner},
};

use crate::{conformance::backend, helpers};

const USERS: usize = 2;
const TOPICS: usize = 2;
const CATEGORIES: [&str; 3] = ["alpha", "beta", "gamma"];
/// Short histories: a case of 30 operations trims some.
const SETTINGS: [(&str, &str); 2] = [("history.max_len", "4"), ("topics.max_len", "3")];

/// An id an operation names: one this case was given (by its index, modulo
/// how many there are), or one neither engine gave.
#[derive(Debug, Clone, Copy)]
enum Pick {
    Given(usize),
    /// Older than anything either engine gives.
    Ancient,
    /// Newer than anything either engine has given.
    Future,
}

#[derive(Debug, Clone)]
enum Op {
    Publish {
        user: usize,
        category: usize,
        key: Option<u8>,
    },
    List {
        user: usize,
        before: Option<Pick>,
        limit: usize,
        unread_only: bool,
    },
    ReadAfter {
        user: usize,
        after: Option<Pick>,
        limit: usize,
    },
    StreamStart {
        user: usize,
    },
    MarkRead {
        user: usize,
        ids: Vec<Pick>,
    },
    MarkAllRead {
        user: usize,
    },
    MarkClicked {
        user: usize,
        id: Pick,
    },
    Delete {
        user: usize,
        id: Pick,
    },
    /// `None` leaves a category to the default; `Some(in_app)` names it.
    SetPreferences {
        user: usize,
        default_in_app: bool,
        categories: [Option<bool>; 3],
    },
    GetPreferences {
        user: usize,
    },
    PublishTopic {
        topic: usize,
        key: Option<u8>,
    },
    ListTopic {
        topic: usize,
        before: Option<Pick>,
        limit: usize,
    },
    ReadTopicAfter {
        topic: usize,
        after: Option<Pick>,
        limit: usize,
    },
    TopicStart {
        topic: usize,
    },
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![8 => any::<usize>().prop_map(Pick::Given), 1 => Just(Pick::Ancient), 1 => Just(Pick::Future)]
}

fn op() -> impl Strategy<Value = Op> {
    let user = 0..USERS;
    let topic = 0..TOPICS;
    let key = prop::option::weighted(0.3, 0u8..3);
    prop_oneof![
        8 => (user.clone(), 0..CATEGORIES.len(), key.clone())
            .prop_map(|(user, category, key)| Op::Publish { user, category, key }),
        3 => (user.clone(), prop::option::of(pick()), 1usize..5, any::<bool>())
            .prop_map(|(user, before, limit, unread_only)| Op::List { user, before, limit, unread_only }),
        2 => (user.clone(), prop::option::of(pick()), 1usize..5)
            .prop_map(|(user, after, limit)| Op::ReadAfter { user, after, limit }),
        1 => user.clone().prop_map(|user| Op::StreamStart { user }),
        2 => (user.clone(), vec(pick(), 1..4)).prop_map(|(user, ids)| Op::MarkRead { user, ids }),
        1 => user.clone().prop_map(|user| Op::MarkAllRead { user }),
        2 => (user.clone(), pick()).prop_map(|(user, id)| Op::MarkClicked { user, id }),
        2 => (user.clone(), pick()).prop_map(|(user, id)| Op::Delete { user, id }),
        1 => (user.clone(), any::<bool>(), any::<[Option<bool>; 3]>())
            .prop_map(|(user, default_in_app, categories)| Op::SetPreferences { user, default_in_app, categories }),
        1 => user.prop_map(|user| Op::GetPreferences { user }),
        2 => (topic.clone(), key).prop_map(|(topic, key)| Op::PublishTopic { topic, key }),
        1 => (topic.clone(), prop::option::of(pick()), 1usize..5)
            .prop_map(|(topic, before, limit)| Op::ListTopic { topic, before, limit }),
        1 => (topic.clone(), prop::option::of(pick()), 1usize..5)
            .prop_map(|(topic, after, limit)| Op::ReadTopicAfter { topic, after, limit }),
        1 => topic.prop_map(|topic| Op::TopicStart { topic }),
    ]
}

/// One case's users and topics: fresh names, so cases share nothing.
struct Cast {
    users: Vec<UserId>,
    topics: Vec<TopicName>,
}

impl Cast {
    fn new() -> Self {
        Self {
            users: (0..USERS).map(|i| UserId::parse(&helpers::unique_user(&format!("model-u{i}"))).unwrap()).collect(),
            topics: (0..TOPICS)
                .map(|i| TopicName::parse(&helpers::unique_user(&format!("model-t{i}"))).unwrap())
                .collect(),
        }
    }
}

/// Which history an id belongs to: ids are unique within one history only
/// (Redis gives `<ms>-0` to the first entry of each stream in a
/// millisecond).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum History {
    Inbox(usize),
    Topic(usize),
}

/// One engine's ids, in the order it gave them in this case.
#[derive(Default)]
struct Given(Vec<(History, EntryId)>);

impl Given {
    /// An id of `history`'s own. Another history's would make the case
    /// depend on timing: whether two histories got the same id, or which
    /// of two ids in one millisecond is the greater, differs by engine.
    fn resolve(&self, history: History, pick: Pick) -> EntryId {
        let own: Vec<EntryId> = self.0.iter().filter(|(h, _)| *h == history).map(|(_, id)| *id).collect();
        match pick {
            Pick::Given(i) if !own.is_empty() => own[i % own.len()],
            Pick::Given(_) | Pick::Ancient => EntryId::new(1, 0),
            Pick::Future => EntryId::new(u64::MAX / 2, 0),
        }
    }

    /// An id of `history` as both engines' results can be compared: which
    /// publish gave it.
    fn show(&self, history: History, id: EntryId) -> String {
        match self.0.iter().position(|&given| given == (history, id)) {
            Some(i) => format!("#{i}"),
            None if id == EntryId::ZERO => "zero".into(),
            None => format!("not given: {id}"),
        }
    }

    fn entries(&self, history: History, entries: &[StoredEntry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| format!("{} {} read={} clicked={}", self.show(history, e.id), e.body, e.read, e.clicked))
            .collect()
    }

    fn list(&self, history: History, page: &ListPage) -> String {
        let next = page.next.map(|id| self.show(history, id));
        format!("items={:?} unread={} next={next:?}", self.entries(history, &page.items), page.unread)
    }

    fn history(&self, history: History, page: &HistoryPage) -> String {
        let reset = page.reset.map(|reset| match reset {
            Reset::HistoryTrimmed => "history_trimmed".to_string(),
            Reset::CursorAhead { newest } => format!("cursor_ahead newest={}", self.show(history, newest)),
        });
        format!("reset={reset:?} entries={:?} unread={}", self.entries(history, &page.entries), page.unread)
    }
}

/// An error as both engines must agree on it: its kind, not its wording.
fn kind(e: &EngineError) -> &'static str {
    match e {
        EngineError::Rejected(_) => "rejected",
        EngineError::TooLarge(_) => "too_large",
        EngineError::NotFound(_) => "not_found",
        EngineError::Unavailable(_) => "unavailable",
    }
}

fn shown<T>(result: Result<T, EngineError>, show: impl FnOnce(T) -> String) -> String {
    result.map_or_else(|e| format!("error: {}", kind(&e)), show)
}

fn notification(kind: &str, title: &str) -> herald::domain::StoredNotification {
    let n: NewNotification = serde_json::from_value(serde_json::json!({"type": kind, "title": title})).unwrap();
    n.validate(&NotificationLimits { max_payload_bytes: 8192, max_title_chars: 200, max_body_chars: 2000 }).unwrap()
}

fn key(key: Option<u8>) -> Option<IdempotencyKey> {
    key.map(|k| IdempotencyKey::parse(&format!("key-{k}")).unwrap())
}

/// Applies `op` (the `step`th of its case) to `engine`; returns what a
/// client could observe of it.
async fn apply(engine: &AnyEngine, given: &mut Given, cast: &Cast, step: usize, op: &Op) -> String {
    let pick = |history, p: &Option<Pick>, given: &Given| p.map(|p| given.resolve(history, p));
    match op {
        Op::Publish { user, category, key: k } => {
            let stored = notification(&format!("{}.event", CATEGORIES[*category]), &format!("step {step}"));
            shown(engine.publish(&cast.users[*user], &stored, key(*k).as_ref()).await, |outcome| match outcome {
                PublishOutcome::Stored(p) => {
                    if !p.duplicate {
                        given.0.push((History::Inbox(*user), p.id));
                    }
                    format!(
                        "stored {} online={} duplicate={} push={:?}",
                        given.show(History::Inbox(*user), p.id),
                        p.online,
                        p.duplicate,
                        p.push
                    )
                }
                PublishOutcome::Dropped => "dropped".into(),
            })
        }
        Op::List { user, before, limit, unread_only } => {
            let query = ListQuery {
                before: pick(History::Inbox(*user), before, given),
                limit: *limit,
                unread_only: *unread_only,
            };
            shown(engine.list(&cast.users[*user], query).await, |page| given.list(History::Inbox(*user), &page))
        }
        Op::ReadAfter { user, after, limit } => {
            let after = pick(History::Inbox(*user), after, given).unwrap_or(EntryId::ZERO);
            shown(engine.read_after(&cast.users[*user], after, *limit).await, |page| {
                given.history(History::Inbox(*user), &page)
            })
        }
        Op::StreamStart { user } => shown(engine.stream_start(&cast.users[*user]).await, |start| {
            format!("last_id={} unread={}", given.show(History::Inbox(*user), start.last_id), start.unread)
        }),
        Op::MarkRead { user, ids } => {
            let target = ReadTarget::Ids(ids.iter().map(|&p| given.resolve(History::Inbox(*user), p)).collect());
            shown(engine.mark_read(&cast.users[*user], &target).await, |unread| format!("unread={unread}"))
        }
        Op::MarkAllRead { user } => {
            shown(engine.mark_read(&cast.users[*user], &ReadTarget::All).await, |unread| format!("unread={unread}"))
        }
        Op::MarkClicked { user, id } => {
            shown(engine.mark_clicked(&cast.users[*user], given.resolve(History::Inbox(*user), *id)).await, |unread| {
                format!("unread={unread}")
            })
        }
        Op::Delete { user, id } => {
            shown(engine.delete(&cast.users[*user], given.resolve(History::Inbox(*user), *id)).await, |unread| {
                format!("unread={unread}")
            })
        }
        Op::SetPreferences { user, default_in_app, categories } => {
            let prefs = Preferences {
                default: Channels { in_app: *default_in_app, push: true },
                categories: CATEGORIES
                    .iter()
                    .zip(categories)
                    .filter_map(|(name, in_app)| {
                        in_app.map(|in_app| (name.to_string(), Channels { in_app, push: true }))
                    })
                    .collect::<BTreeMap<_, _>>(),
                ..Preferences::default()
            };
            shown(engine.set_preferences(&cast.users[*user], &prefs).await, |()| "set".into())
        }
        Op::GetPreferences { user } => shown(engine.preferences(&cast.users[*user]).await, |p| format!("{p:?}")),
        Op::PublishTopic { topic, key: k } => {
            let stored = notification("news.event", &format!("step {step}"));
            shown(engine.publish_topic(&cast.topics[*topic], &stored, key(*k).as_ref()).await, |p| {
                if !p.duplicate {
                    given.0.push((History::Topic(*topic), p.id));
                }
                format!("stored {} duplicate={}", given.show(History::Topic(*topic), p.id), p.duplicate)
            })
        }
        Op::ListTopic { topic, before, limit } => shown(
            engine.list_topic(&cast.topics[*topic], pick(History::Topic(*topic), before, given), *limit).await,
            |page| given.list(History::Topic(*topic), &page),
        ),
        Op::ReadTopicAfter { topic, after, limit } => {
            let after = pick(History::Topic(*topic), after, given).unwrap_or(EntryId::ZERO);
            shown(engine.read_topic_after(&cast.topics[*topic], after, *limit).await, |page| {
                given.history(History::Topic(*topic), &page)
            })
        }
        Op::TopicStart { topic } => shown(engine.topic_start(&cast.topics[*topic]).await, |last| {
            format!("last_id={}", given.show(History::Topic(*topic), last))
        }),
    }
}

/// Everything a client could read of the case's users and topics.
async fn everything(engine: &AnyEngine, given: &Given, cast: &Cast) -> Vec<String> {
    let mut seen = Vec::new();
    for (i, user) in cast.users.iter().enumerate() {
        let all = ListQuery { before: None, limit: 100, unread_only: false };
        seen.push(shown(engine.list(user, all).await, |page| given.list(History::Inbox(i), &page)));
        seen.push(shown(engine.read_after(user, EntryId::ZERO, 100).await, |page| {
            given.history(History::Inbox(i), &page)
        }));
        seen.push(shown(engine.preferences(user).await, |p| format!("{p:?}")));
    }
    for (i, topic) in cast.topics.iter().enumerate() {
        seen.push(shown(engine.list_topic(topic, None, 100).await, |page| given.list(History::Topic(i), &page)));
    }
    seen
}

/// Runs one case on both engines; the first disagreement fails it.
async fn agree(memory: &AnyEngine, redis: &AnyEngine, ops: &[Op]) -> Result<(), TestCaseError> {
    let cast = Cast::new();
    let (mut in_memory, mut in_redis) = (Given::default(), Given::default());
    for (step, op) in ops.iter().enumerate() {
        let expected = apply(memory, &mut in_memory, &cast, step, op).await;
        let actual = apply(redis, &mut in_redis, &cast, step, op).await;
        prop_assert_eq!(&actual, &expected, "step {} {:?}: redis (left) and memory (right) differ", step, op);
    }
    let expected = everything(memory, &in_memory, &cast).await;
    let actual = everything(redis, &in_redis, &cast).await;
    prop_assert_eq!(actual, expected, "the state after every step differs: redis (left), memory (right)");
    Ok(())
}

/// The engines as the server builds them, one runtime for the whole run
/// (each engine's connections live on it); one `redis-server`, each case
/// with users and topics of its own.
#[test]
fn memory_and_redis_engines_agree_on_every_operation() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = helpers::RedisServer::start();
    let (memory, redis) = runtime.block_on(async {
        let memory = backend(&helpers::Engine::Memory, &SETTINGS).await.engine;
        let redis = backend(&helpers::Engine::Redis(server.url()), &SETTINGS).await.engine;
        (memory, redis)
    });
    let config = Config {
        cases: 256,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel("proptest-regressions"))),
        ..Config::default()
    };

    let result = TestRunner::new(config).run(&vec(op(), 1..30), |ops| runtime.block_on(agree(&memory, &redis, &ops)));

    if let Err(e) = result {
        panic!("{e}");
    }
}
