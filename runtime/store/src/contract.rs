//! The store's behaviour, written once and run against each engine: what
//! SQLite does, PostgreSQL does the same. Each engine's tests call these
//! with a store of its own.

use squall_core::TenantId;
use squall_core::auth::Role;
use squall_core::execution::{CapturedOutput, Execution, ExecutionStatus, StatusChange};
use squall_core::ids::ExecutionId;
use squall_core::kv::{KvEntry, KvError, KvStore};
use squall_core::trigger::{
    EnforcementStatus, RuleEnforcement, TriggerInstance, TriggerInstanceStatus, new_id,
};

use crate::auth::AccountError;
use crate::engine::Contract;
use crate::executions::ExecutionFilter;
use crate::reactor::{Emission, EnforcementFilter, Page, TraceFilter};
use crate::workflows::{Batch, Completion, WorkflowWrite};
use crate::{Result, Store};

type Values = serde_json::Map<String, serde_json::Value>;

/// A store under test, on either engine: the contract, the datastore, and
/// what the tests read behind the contract's back.
pub(crate) trait Engine: Contract + KvStore + Clone + 'static {
    /// `start_execution`, queued (SQLite's lane).
    async fn start(&self, execution: &Execution) -> Result<bool>;
    /// The same database, without the key that seals secrets.
    fn keyless(&self) -> Self;
    /// Every value of `column` of `table`, as stored.
    async fn at_rest(&self, table: &str, column: &str) -> Vec<String>;
}

impl Engine for Store {
    async fn start(&self, execution: &Execution) -> Result<bool> {
        self.start_execution(execution, crate::Lane::Queued).await
    }

    fn keyless(&self) -> Self {
        if let Some(s) = self.sqlite() {
            let mut other = s.clone();
            other.secret_key = None;
            return other.into();
        }
        let mut other = self.postgres().expect("one of the engines").clone();
        other.secret_key = None;
        other.into()
    }

    async fn at_rest(&self, table: &str, column: &str) -> Vec<String> {
        let sql = format!("SELECT {column} FROM {table}");
        if let Some(s) = self.sqlite() {
            return s
                .read_async(move |conn| {
                    let mut stmt = conn.prepare(&sql)?;
                    let rows = stmt.query_map([], |r| r.get(0))?;
                    Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
                })
                .await
                .expect("read");
        }
        let pg = self.postgres().expect("one of the engines");
        let client = pg.client().await.expect("client");
        client
            .query(&sql, &[])
            .await
            .expect("read")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

/// The secret value [`datastore`] writes.
pub(crate) const SECRET: &str = "hunter2-plain";

fn entry(key: &str, value: &str, expires_at: Option<u64>, secret: bool) -> KvEntry {
    KvEntry {
        key: key.into(),
        value: value.into(),
        expires_at,
        secret,
    }
}

/// The datastore: scoped by tenant, expiry, listing in key order, replace
/// and delete, secrets sealed at rest, user keys kept out of guests'
/// listings. `store` has a secret key.
pub(crate) async fn datastore(store: &impl Engine) {
    let t = TenantId::default_tenant();
    for (k, v) in [("a:2", "two"), ("a:1", "one"), ("b:1", "x")] {
        store.set(&t, entry(k, v, None, false)).await.expect("set");
    }
    store
        .set(&t, entry("a:old", "gone", Some(1), false))
        .await
        .expect("set");
    let value = |e: Option<KvEntry>| e.map(|e| e.value);
    assert_eq!(
        value(store.get(&t, "a:1").await.expect("get")),
        Some("one".into())
    );
    assert_eq!(
        store.get(&t, "a:old").await.expect("get"),
        None,
        "expired keys are absent"
    );
    let keys = |entries: Vec<KvEntry>| entries.into_iter().map(|e| e.key).collect::<Vec<_>>();
    assert_eq!(
        keys(store.list(&t, "a:").await.expect("list")),
        ["a:1", "a:2"]
    );
    assert_eq!(
        keys(store.list(&t, "").await.expect("list")),
        ["a:1", "a:2", "b:1"]
    );
    let other = TenantId::new("other").expect("valid");
    assert_eq!(store.get(&other, "a:1").await.expect("get"), None);
    assert!(store.list(&other, "").await.expect("list").is_empty());

    store
        .set(&t, entry("a:1", "uno", None, false))
        .await
        .expect("replace");
    assert_eq!(
        value(store.get(&t, "a:1").await.expect("get")),
        Some("uno".into())
    );
    assert!(store.delete(&t, "a:1").await.expect("delete"));
    assert!(!store.delete(&t, "a:1").await.expect("delete again"));
    assert!(
        !store
            .delete(&t, "a:old")
            .await
            .expect("an expired key is absent")
    );

    // Secrets: sealed at rest, clear to `get`, masked in listings unless
    // decrypted.
    store
        .set(&t, entry("es_password", SECRET, None, true))
        .await
        .expect("set secret");
    let got = store
        .get(&t, "es_password")
        .await
        .expect("get")
        .expect("there");
    assert_eq!((got.value.as_str(), got.secret), (SECRET, true));
    assert_eq!(
        store.list(&t, "es_").await.expect("list")[0].value,
        "********"
    );
    assert_eq!(
        store.kv_list(&t, "es_", true).await.expect("list")[0].value,
        SECRET
    );
    assert!(
        !store
            .at_rest("kv", "value")
            .await
            .iter()
            .any(|v| v.contains(SECRET))
    );
    // Without the key: refused, not returned sealed.
    assert!(matches!(
        store.keyless().get(&t, "es_password").await,
        Err(KvError::EncryptionUnavailable)
    ));

    // A user's keys (under the scope's mark) are the API's, not guests'.
    let user_key = squall_core::kv::KvScope::User("ann".into()).storage_key("token");
    store
        .set(&t, entry(&user_key, "u", None, false))
        .await
        .expect("set");
    assert!(
        keys(store.list(&t, "").await.expect("list"))
            .iter()
            .all(|k| *k != user_key)
    );
    assert!(keys(store.kv_list(&t, "", false).await.expect("list")).contains(&user_key));
}

/// The datastore's quota, `limit` bytes of live keys and values per
/// tenant: a write past it is refused; a replaced value and an expired key
/// count no more; writers racing each other cannot together pass it.
pub(crate) async fn datastore_quota(store: &impl Engine, limit: u64) {
    let t = TenantId::default_tenant();
    let big = "x".repeat(usize::try_from(limit).expect("small"));
    let refused = store.set(&t, entry("k", &big, None, false)).await;
    assert!(matches!(refused, Err(KvError::Quota { .. })), "{refused:?}");
    store
        .set(&t, entry("k", "12345", None, false))
        .await
        .expect("fits");
    store
        .set(&t, entry("k", "123456", None, false))
        .await
        .expect("a replaced value counts once");
    let half = big.len() / 2;
    store
        .set(&t, entry("old", &big[..half], Some(1), false))
        .await
        .expect("fits");
    let most = usize::try_from(limit).expect("small") - 20;
    store
        .set(&t, entry("new", &big[..most], None, false))
        .await
        .expect("an expired key counts no more");
    assert!(store.delete(&t, "k").await.expect("delete"));
    assert!(store.delete(&t, "new").await.expect("delete"));

    // Twenty writers at once, each of a tenth of the quota: at most ten fit.
    let tenth = "y".repeat(usize::try_from(limit / 10).expect("small") - 4);
    let writers: Vec<_> = (0..20)
        .map(|i| {
            let (store, t, value) = (store.clone(), t.clone(), tenth.clone());
            tokio::spawn(async move {
                store
                    .set(&t, entry(&format!("w{i:02}"), &value, None, false))
                    .await
            })
        })
        .collect();
    let mut fitted = 0;
    for w in writers {
        match w.await.expect("writer") {
            Ok(()) => fitted += 1,
            Err(KvError::Quota { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let held: usize = store
        .kv_list(&t, "", false)
        .await
        .expect("list")
        .iter()
        .map(|e| e.key.len() + e.value.len())
        .sum();
    assert!(
        fitted >= 1 && held as u64 <= limit,
        "{fitted} fitted, {held} bytes held"
    );
}

/// Accounts: tenants, users with passwords, API keys and tokens. Keys and
/// tokens are stored hashed; a user name is one account server-wide; a
/// changed user's tokens end.
pub(crate) async fn accounts(store: &impl Engine) {
    let acme = TenantId::new("acme").expect("id");
    store.create_tenant(&acme).await.expect("tenant");
    assert!(matches!(
        store.create_tenant(&acme).await,
        Err(AccountError::Exists { .. })
    ));
    let names: Vec<String> = store
        .tenants()
        .await
        .expect("tenants")
        .into_iter()
        .map(|t| t.id.to_string())
        .collect();
    assert_eq!(names, ["acme", "default"]);

    assert!(!store.any_api_key().await.expect("read"));
    let (id, key) = store
        .create_api_key(&acme, "ops", Role::Operator)
        .await
        .expect("key");
    assert!(store.any_api_key().await.expect("read"));
    let p = store
        .api_key_principal(&key)
        .await
        .expect("read")
        .expect("known");
    assert_eq!(
        (p.tenant.as_str(), p.user.as_str(), p.role),
        ("acme", "ops", Role::Operator)
    );
    assert_eq!(
        store.api_key_principal("sq_nope").await.expect("read"),
        None
    );
    let hashes = store.at_rest("api_keys", "key_hash").await;
    assert!(hashes.iter().all(|h| *h != key && !h.contains(&key[3..])));
    let listed = store.api_keys(&acme).await.expect("list");
    assert_eq!(
        (listed.len(), listed[0].id.as_str(), listed[0].enabled),
        (1, id.as_str(), true)
    );
    // Another tenant can neither disable nor delete it.
    let default = TenantId::default_tenant();
    assert!(
        !store
            .set_api_key_enabled(&default, &id, false)
            .await
            .expect("write")
    );
    assert!(!store.delete_api_key(&default, &id).await.expect("write"));
    assert!(
        store
            .set_api_key_enabled(&acme, &id, false)
            .await
            .expect("write")
    );
    assert_eq!(store.api_key_principal(&key).await.expect("read"), None);
    assert!(
        store
            .set_api_key_enabled(&acme, &id, true)
            .await
            .expect("write")
    );
    assert!(store.delete_api_key(&acme, &id).await.expect("write"));
    assert_eq!(store.api_key_principal(&key).await.expect("read"), None);
    let ghost = TenantId::new("ghost").expect("id");
    assert!(matches!(
        store.create_api_key(&ghost, "x", Role::Viewer).await,
        Err(AccountError::UnknownTenant(_))
    ));

    store
        .put_user(&default, "ana", Role::Viewer, Some("correct horse"))
        .await
        .expect("user");
    assert_eq!(
        store.check_password("ana", "wrong").await.expect("check"),
        None
    );
    assert_eq!(
        store.check_password("nobody", "x").await.expect("check"),
        None
    );
    let p = store
        .check_password("ana", "correct horse")
        .await
        .expect("check")
        .expect("matches");
    assert_eq!(p.role, Role::Viewer);
    let (token, _) = store.create_token(&p, 60).await.expect("token");
    assert_eq!(
        store.token_principal(&token).await.expect("read"),
        Some(p.clone())
    );
    let (expired, _) = store.create_token(&p, 0).await.expect("token");
    assert_eq!(store.token_principal(&expired).await.expect("read"), None);
    // A changed user signs in again; the password stays when not given.
    store
        .put_user(&default, "ana", Role::Operator, None)
        .await
        .expect("user");
    assert_eq!(store.token_principal(&token).await.expect("read"), None);
    let p = store
        .check_password("ana", "correct horse")
        .await
        .expect("check")
        .expect("the password stays");
    assert_eq!(p.role, Role::Operator);
    let (token, _) = store.create_token(&p, 60).await.expect("token");
    assert!(store.revoke_token(&token).await.expect("revoke"));
    assert!(!store.revoke_token(&token).await.expect("revoke again"));
    assert_eq!(store.token_principal(&token).await.expect("read"), None);
    let users = store.users(&default).await.expect("users");
    assert_eq!(
        users
            .iter()
            .map(|u| (u.name.as_str(), u.role.as_str(), u.has_password))
            .collect::<Vec<_>>(),
        [("ana", "operator", true)]
    );
    // A user name is one account server-wide.
    assert!(matches!(
        store.put_user(&acme, "ana", Role::Admin, None).await,
        Err(AccountError::OtherTenant { .. })
    ));
    assert!(matches!(
        store.put_user(&ghost, "bo", Role::Admin, None).await,
        Err(AccountError::UnknownTenant(_))
    ));
}

/// Pack configs set through the API: kept per tenant and pack, sealed at
/// rest (`store` has a key), unreadable without the key, dropped on
/// request.
pub(crate) async fn pack_configs(store: &impl Engine) {
    let tenant = TenantId::default_tenant();
    let given: Values =
        serde_json::from_str(r#"{"api_token": "hunter2", "region": "eu"}"#).expect("json");
    assert!(
        !store
            .put_pack_config(&tenant, "examples", Some(&given))
            .await
            .expect("put")
    );
    let got = store
        .pack_config(&tenant, "examples")
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(got.values, given);
    assert!(
        store
            .put_pack_config(&tenant, "examples", Some(&given))
            .await
            .expect("again")
    );
    let at_rest = store.at_rest("pack_configs", "config").await;
    assert!(
        at_rest
            .iter()
            .all(|c| !c.contains("hunter2") && c.starts_with("v2:")),
        "{at_rest:?}"
    );
    let other = TenantId::new("other").expect("tenant");
    assert!(
        store
            .pack_config(&other, "examples")
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        store
            .keyless()
            .pack_config(&tenant, "examples")
            .await
            .is_err()
    );
    assert_eq!(
        store
            .pack_configs(&tenant)
            .await
            .expect("list")
            .readable
            .len(),
        1
    );
    // Under another key it cannot be read: said, not hidden, and not an
    // error for the list.
    let listed = store.keyless().pack_configs(&tenant).await.expect("list");
    assert!(listed.readable.is_empty());
    assert_eq!(listed.unreadable.len(), 1);
    assert_eq!(listed.unreadable[0].0, "examples");
    assert!(
        store
            .put_pack_config(&tenant, "examples", None)
            .await
            .expect("drop")
    );
    assert!(
        !store
            .put_pack_config(&tenant, "examples", None)
            .await
            .expect("drop again")
    );
    assert!(
        store
            .pack_config(&tenant, "examples")
            .await
            .expect("get")
            .is_none()
    );
}

/// A new execution of `action` in the default tenant.
pub(crate) fn execution(action: &str, status: ExecutionStatus) -> Execution {
    Execution {
        id: ExecutionId::generate(),
        tenant: TenantId::default_tenant(),
        action: action.parse().expect("valid ref"),
        status,
        parameters: serde_json::json!({"message": "hi"}),
        result: None,
        output: CapturedOutput::default(),
        start_timestamp: squall_core::time::now_rfc3339(),
        end_timestamp: None,
        log: vec![StatusChange {
            status,
            timestamp: squall_core::time::now_rfc3339(),
        }],
        trace_tag: None,
        trigger_instance_id: None,
        rule_ref: None,
        trigger_type: None,
        context: Default::default(),
        delay: None,
    }
}

/// Execution records: a round trip of every field, each filter the API and
/// the UI offer, paging by id, counting; a completed execution is never
/// written again, a waiting one starts once, only a running one is marked
/// canceling; tenants see only their own.
pub(crate) async fn executions(store: &impl Engine) {
    let tenant = TenantId::default_tenant();
    let mut a = execution("core.echo", ExecutionStatus::Requested);
    a.context.insert("user".into(), serde_json::json!("ann"));
    a.trace_tag = Some("tag-1".into());
    a.delay = Some(250);
    let mut b = execution("core.noop", ExecutionStatus::Requested);
    b.trigger_instance_id = Some("ti-1".into());
    b.rule_ref = Some("hooks.on_alert".into());
    b.trigger_type = Some("core.st2.webhook".into());
    store.insert_execution(&a).await.expect("insert a");
    store.insert_execution(&b).await.expect("insert b");
    let mut task = execution("core.echo", ExecutionStatus::Requested);
    task.context.insert(
        "parent".into(),
        serde_json::json!({"execution_id": b.id.as_str()}),
    );
    store
        .insert_executions(std::slice::from_ref(&task))
        .await
        .expect("insert task");

    // Starts once; completes once.
    assert!(a.transition(ExecutionStatus::Scheduled) && a.transition(ExecutionStatus::Running));
    assert!(store.start(&a).await.expect("start"));
    assert!(!store.start(&a).await.expect("start again"));
    assert!(store.mark_canceling(&a).await.expect("running: marked"));
    assert!(
        !store
            .mark_canceling(&b)
            .await
            .expect("not running: not marked")
    );
    assert!(a.transition(ExecutionStatus::Succeeded));
    a.result = Some(serde_json::json!({"message": "hi"}));
    a.output.stdout = "out".into();
    assert!(store.update_execution(&a).await.expect("update"));
    let got = store
        .get_execution(&tenant, &a.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got, a);
    let mut late = a.clone();
    late.status = ExecutionStatus::Failed;
    assert!(
        !store
            .update_execution(&late)
            .await
            .expect("a completed one stays")
    );
    assert_eq!(
        store
            .get_execution(&tenant, &a.id)
            .await
            .expect("get")
            .expect("exists")
            .status,
        ExecutionStatus::Succeeded
    );
    let ghost = execution("core.noop", ExecutionStatus::Succeeded);
    assert!(
        store.update_execution(&ghost).await.is_err(),
        "an unknown one is an error"
    );
    assert_eq!(
        store
            .get_execution(&tenant, &b.id)
            .await
            .expect("get")
            .expect("b"),
        b
    );

    // Filters, newest first.
    let ids = |list: Vec<Execution>| list.into_iter().map(|e| e.id).collect::<Vec<_>>();
    let all = ExecutionFilter::for_tenant(tenant.clone());
    assert_eq!(
        ids(store.list_executions(&all).await.expect("list")),
        [task.id.clone(), b.id.clone(), a.id.clone()]
    );
    let (stored, total) = store.list_executions_stored(&all).await.expect("list");
    assert_eq!((stored.len(), total), (3, 3));
    assert_eq!(
        stored[2].result_json.as_deref(),
        Some(r#"{"message":"hi"}"#)
    );
    let one = store
        .get_execution_stored(&tenant, &a.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(one.result_json.as_deref(), Some(r#"{"message":"hi"}"#));
    let mut paged = all.clone();
    paged.limit = 2;
    let (first_two, total) = store.list_executions_counted(&paged).await.expect("list");
    assert_eq!(
        (ids(first_two), total),
        (vec![task.id.clone(), b.id.clone()], 3)
    );
    let with = |change: &dyn Fn(&mut ExecutionFilter)| {
        let mut f = all.clone();
        change(&mut f);
        f
    };
    let cases: Vec<(ExecutionFilter, Vec<ExecutionId>)> = vec![
        (
            with(&|f| f.status = Some(ExecutionStatus::Succeeded)),
            vec![a.id.clone()],
        ),
        (
            with(&|f| f.action = Some("core.noop".parse().expect("ref"))),
            vec![b.id.clone()],
        ),
        (
            with(&|f| {
                f.action = Some("core.echo".parse().expect("ref"));
                f.status = Some(ExecutionStatus::Requested);
            }),
            vec![task.id.clone()],
        ),
        (
            with(&|f| f.trigger_instance = Some("ti-1".into())),
            vec![b.id.clone()],
        ),
        (
            with(&|f| f.rule = Some("hooks.on_alert".into())),
            vec![b.id.clone()],
        ),
        (
            with(&|f| f.trigger_type = Some("core.st2.webhook".into())),
            vec![b.id.clone()],
        ),
        (
            with(&|f| f.trigger_type = Some("core.st2.CronTimer".into())),
            vec![],
        ),
        (
            with(&|f| f.parent = Some(Some(b.id.clone()))),
            vec![task.id.clone()],
        ),
        (
            with(&|f| f.parent = Some(None)),
            vec![b.id.clone(), a.id.clone()],
        ),
        (
            with(&|f| {
                f.parent = Some(None);
                f.user = Some("ann".into());
            }),
            vec![a.id.clone()],
        ),
        (
            with(&|f| f.before = Some(b.id.as_str().to_owned())),
            vec![a.id.clone()],
        ),
        (
            with(&|f| f.since = Some(b.id.as_str().to_owned())),
            vec![task.id.clone(), b.id.clone()],
        ),
        (with(&|f| f.limit = 1), vec![task.id.clone()]),
        (with(&|f| f.offset = 2), vec![a.id.clone()]),
        (
            with(&|f| f.tenant = TenantId::new("other").expect("tenant")),
            vec![],
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(
            ids(store.list_executions(&filter).await.expect("list")),
            expected,
            "{filter:?}"
        );
    }

    // The history's rows.
    let mut f = all.clone();
    f.parent = Some(None);
    let rows = store.list_execution_summaries(&f).await.expect("summaries");
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (
            rows[0].id.as_str(),
            rows[0].has_children,
            rows[0].trigger_type.as_deref(),
            rows[0].rule.as_deref()
        ),
        (
            b.id.as_str(),
            true,
            Some("core.st2.webhook"),
            Some("hooks.on_alert")
        )
    );
    assert_eq!(
        (
            rows[1].id.as_str(),
            rows[1].user.as_deref(),
            rows[1].status.as_str(),
            rows[1].has_children
        ),
        (a.id.as_str(), Some("ann"), "succeeded", false)
    );
    assert!(rows[1].end_timestamp.is_some());
    let other = TenantId::new("other").expect("tenant");
    assert!(
        store
            .get_execution(&other, &a.id)
            .await
            .expect("get")
            .is_none()
    );
}

/// A webhook's trigger instance, traced under `trace_tag` (else its id).
pub(crate) fn instance(trace_tag: Option<&str>) -> TriggerInstance {
    let id = new_id();
    TriggerInstance {
        trace_tag: trace_tag.map_or_else(|| id.clone(), str::to_owned),
        id,
        tenant: TenantId::default_tenant(),
        trigger_type: "core.st2.webhook".into(),
        trigger_parameters: serde_json::json!({"url": "x"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        payload: serde_json::json!({"body": {"a": 1}, "headers": {}}),
        occurrence_time: squall_core::time::now_rfc3339(),
        status: TriggerInstanceStatus::Processed,
    }
}

/// A requested execution and its enforcement, as rule `examples.r` on
/// `ti` makes them.
pub(crate) fn outcome(ti: &TriggerInstance) -> (Execution, RuleEnforcement) {
    let mut e = execution("core.echo", ExecutionStatus::Requested);
    e.trace_tag = Some(ti.trace_tag.clone());
    e.trigger_instance_id = Some(ti.id.clone());
    e.rule_ref = Some("examples.r".into());
    e.trigger_type = Some(ti.trigger_type.clone());
    let enforcement = RuleEnforcement {
        id: new_id(),
        tenant: ti.tenant.clone(),
        rule_ref: "examples.r".into(),
        trigger_instance_id: ti.id.clone(),
        execution_id: Some(e.id.clone()),
        status: EnforcementStatus::Succeeded,
        failure_reason: None,
        enforced_at: squall_core::time::now_rfc3339(),
        trace_tag: ti.trace_tag.clone(),
    };
    (e, enforcement)
}

/// The reactor's records: an event and what it set off are one write (a
/// second write of it fails whole); traces gather an event's records,
/// whether tagged by its own id or not; lists filter and page; API
/// overrides round-trip; recovery finds what waits and what ran; retention
/// deletes only what is old and done.
pub(crate) async fn reactor_records(store: &impl Engine) {
    let tenant = TenantId::default_tenant();
    let page = |limit, offset| Page { limit, offset };
    // Tagged by its own id (no St2-Trace-Tag).
    let ti = instance(None);
    let (first, enforcement) = outcome(&ti);
    store
        .insert_processed_trigger_instance(&ti, vec![enforcement.clone()], &[&first])
        .await
        .expect("record");
    let again = store
        .insert_processed_trigger_instance(&ti, vec![enforcement.clone()], &[&first])
        .await;
    assert!(again.is_err(), "nothing doubles");
    assert_eq!(store.pending_executions().await.expect("pending").len(), 1);
    // What its execution's completion emits: the same tag, an id of its own.
    let emitted = instance(Some(&ti.id));
    let (follow_up, follow_up_enforcement) = outcome(&emitted);
    store
        .insert_processed_trigger_instance(&emitted, vec![follow_up_enforcement], &[&follow_up])
        .await
        .expect("record");
    // An execution requested through the API under that tag.
    let mut requested = execution("core.noop", ExecutionStatus::Requested);
    requested.trace_tag = Some(ti.id.clone());
    store.insert_execution(&requested).await.expect("record");
    // Another event with a tag of its own, with no outcome.
    let other = instance(Some("trace-2"));
    store
        .insert_processed_trigger_instance(&other, Vec::new(), &[])
        .await
        .expect("record");

    let trace = store.trace(&tenant, &ti.id).await.expect("trace");
    let ids = |v: Vec<String>| v;
    assert_eq!(
        ids(trace
            .trigger_instances
            .iter()
            .map(|t| t.id.clone())
            .collect()),
        [ti.id.clone(), emitted.id.clone()]
    );
    assert_eq!(
        trace
            .executions
            .iter()
            .map(|e| e.id.clone())
            .collect::<Vec<_>>(),
        [first.id.clone(), follow_up.id.clone(), requested.id.clone()]
    );
    assert_eq!(trace.rule_enforcements.len(), 2);
    assert_eq!(trace.rule_enforcements[0], enforcement);
    let elsewhere = TenantId::new("elsewhere").expect("tenant");
    let none = store.trace(&elsewhere, &ti.id).await.expect("trace");
    assert!(none.trigger_instances.is_empty() && none.executions.is_empty());
    let other_trace = store.trace(&tenant, "trace-2").await.expect("trace");
    assert_eq!(other_trace.trigger_instances.len(), 1);
    assert!(other_trace.executions.is_empty());

    // Lists.
    assert_eq!(
        store
            .get_trigger_instance(&tenant, &ti.id)
            .await
            .expect("get"),
        Some(ti.clone())
    );
    assert_eq!(
        store
            .get_enforcement(&tenant, &enforcement.id)
            .await
            .expect("get"),
        Some(enforcement.clone())
    );
    assert!(
        store
            .get_enforcement(&elsewhere, &enforcement.id)
            .await
            .expect("get")
            .is_none()
    );
    let (items, total) = store
        .list_trigger_instances(&tenant, Some("core.st2.webhook"), page(2, 0))
        .await
        .expect("list");
    assert_eq!(
        (
            items.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
            total
        ),
        (vec![other.id.clone(), emitted.id.clone()], 3)
    );
    let (items, _) = store
        .list_trigger_instances(&tenant, Some("core.st2.webhook"), page(10, 2))
        .await
        .expect("list");
    assert_eq!(
        items.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        std::slice::from_ref(&ti.id)
    );
    let (items, total) = store
        .list_trigger_instances(&tenant, Some("core.st2.CronTimer"), page(10, 0))
        .await
        .expect("list");
    assert!(items.is_empty() && total == 0);
    let by = |f: EnforcementFilter| f;
    for (filter, expected) in [
        (
            by(EnforcementFilter {
                rule_ref: Some("examples.r".into()),
                ..Default::default()
            }),
            2,
        ),
        (
            by(EnforcementFilter {
                trigger_instance: Some(ti.id.clone()),
                ..Default::default()
            }),
            1,
        ),
        (
            by(EnforcementFilter {
                execution: Some(follow_up.id.as_str().to_owned()),
                ..Default::default()
            }),
            1,
        ),
        (
            by(EnforcementFilter {
                enforced_after: Some("2000-01-01T00:00:00Z".into()),
                ..Default::default()
            }),
            2,
        ),
        (
            by(EnforcementFilter {
                enforced_before: Some("2000-01-01T00:00:00Z".into()),
                ..Default::default()
            }),
            0,
        ),
        (
            by(EnforcementFilter {
                rule_ref: Some("examples.none".into()),
                ..Default::default()
            }),
            0,
        ),
    ] {
        let (items, total) = store
            .list_enforcements(&tenant, &filter, page(10, 0))
            .await
            .expect("list");
        assert_eq!(
            (items.len(), total),
            (expected, expected as u64),
            "{filter:?}"
        );
    }
    let (tags, total) = store
        .trace_tags(&tenant, &TraceFilter::default(), true, page(10, 0))
        .await
        .expect("tags");
    assert_eq!(
        (tags, total),
        (vec![ti.id.clone(), "trace-2".to_owned()], 2)
    );
    let (tags, _) = store
        .trace_tags(
            &tenant,
            &TraceFilter {
                execution: Some(requested.id.as_str().to_owned()),
                ..Default::default()
            },
            false,
            page(10, 0),
        )
        .await
        .expect("tags");
    assert_eq!(tags, std::slice::from_ref(&ti.id));

    // Recovery and counts.
    let mut running = first.clone();
    assert!(
        running.transition(ExecutionStatus::Scheduled)
            && running.transition(ExecutionStatus::Running)
    );
    assert!(store.update_execution(&running).await.expect("update"));
    let mut asking = follow_up.clone();
    assert!(
        asking.transition(ExecutionStatus::Scheduled)
            && asking.transition(ExecutionStatus::Running)
    );
    assert!(asking.transition(ExecutionStatus::Pending));
    assert!(store.update_execution(&asking).await.expect("update"));
    let only = |v: Vec<Execution>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(
        only(store.unfinished_executions().await.expect("list")),
        std::slice::from_ref(&first.id)
    );
    assert_eq!(
        only(store.waiting_inquiries().await.expect("list")),
        std::slice::from_ref(&follow_up.id)
    );
    assert_eq!(
        only(store.pending_executions().await.expect("list")),
        [requested.id.clone()]
    );
    let mut counts = store
        .execution_status_counts(&tenant)
        .await
        .expect("counts");
    counts.sort_by_key(|(s, _)| s.as_str());
    assert_eq!(
        counts,
        [
            (ExecutionStatus::Pending, 1),
            (ExecutionStatus::Requested, 1),
            (ExecutionStatus::Running, 1)
        ]
    );

    // Overrides made through the API.
    store
        .put_rule(&tenant, "p.a", Some("{}".into()))
        .await
        .expect("put");
    store.put_rule(&tenant, "p.b", None).await.expect("delete");
    store
        .put_rule(&tenant, "p.a", Some("{\"x\":1}".into()))
        .await
        .expect("replace");
    assert_eq!(
        store.rule_changes().await.expect("list"),
        vec![
            (tenant.clone(), "p.a".into(), Some("{\"x\":1}".into())),
            (tenant.clone(), "p.b".into(), None)
        ]
    );
    store
        .put_policy(&tenant, "p.c", Some("{}".into()))
        .await
        .expect("put");
    assert_eq!(
        store.policy_changes().await.expect("list"),
        vec![(tenant.clone(), "p.c".into(), Some("{}".into()))]
    );
    store
        .put_sensor_enabled(&tenant, "p.s", false)
        .await
        .expect("put");
    store
        .put_sensor_enabled(&tenant, "p.s", true)
        .await
        .expect("put");
    assert_eq!(
        store.sensor_overrides().await.expect("list"),
        vec![(tenant.clone(), "p.s".into(), true)]
    );

    // Retention: only what is old and done goes, in batches.
    let mut done = requested.clone();
    assert!(done.transition(ExecutionStatus::Canceled));
    assert!(store.update_execution(&done).await.expect("update"));
    for _ in 0..25 {
        let mut e = execution("core.noop", ExecutionStatus::Succeeded);
        e.end_timestamp = Some(squall_core::time::now_rfc3339());
        store.insert_execution(&e).await.expect("insert");
    }
    let day_ago = squall_core::time::rfc3339_ago(std::time::Duration::from_secs(86_400));
    assert_eq!(store.purge(&day_ago, 10).await.expect("purge"), (0, 0, 0));
    std::thread::sleep(std::time::Duration::from_millis(5));
    let now = squall_core::time::now_rfc3339();
    assert_eq!(store.purge(&now, 10).await.expect("purge"), (26, 3, 2));
    assert!(
        store
            .get_execution(&tenant, &first.id)
            .await
            .expect("get")
            .is_some(),
        "running stays"
    );
    assert!(
        store
            .get_execution(&tenant, &follow_up.id)
            .await
            .expect("get")
            .is_some(),
        "pending stays"
    );
    assert!(store.purge("not a time", 10).await.is_err());
}

fn workflow_write(
    wf: &Execution,
    context: Option<&str>,
    head: &str,
    completed: bool,
    tasks: &[(u64, &str)],
) -> WorkflowWrite {
    WorkflowWrite {
        id: wf.id.clone(),
        tenant: wf.tenant.clone(),
        context: context.map(str::to_owned),
        head: head.into(),
        completed,
        tasks: tasks.iter().map(|(i, b)| (*i, (*b).to_owned())).collect(),
    }
}

/// Workflow batches: a workflow's state is written with the executions
/// that moved it, in one transaction; the first completion (or update)
/// decides, and when its execution had already ended nothing of the batch
/// is written; records the batch creates are written first and never
/// decide.
pub(crate) async fn workflow_batches(store: &impl Engine) {
    let tenant = TenantId::default_tenant();
    let mut wf = execution("examples.flow", ExecutionStatus::Requested);
    store.insert_execution(&wf).await.expect("insert");
    assert!(wf.transition(ExecutionStatus::Scheduled) && wf.transition(ExecutionStatus::Running));
    let task_of = |action: &str| {
        let mut task = execution(action, ExecutionStatus::Requested);
        task.context.insert(
            "parent".into(),
            serde_json::json!({"execution_id": wf.id.as_str()}),
        );
        task
    };
    let mut first = task_of("core.echo");
    // It starts: running, its first task requested, its state written.
    let start = Batch {
        updates: vec![&wf],
        inserts: vec![&first],
        workflows: vec![workflow_write(
            &wf,
            Some("{\"input\":1}"),
            "h1",
            false,
            &[(0, "t0")],
        )],
        ..Default::default()
    };
    assert!(store.write_batch(&start).await.expect("start"));
    let running = store.running_workflows().await.expect("running");
    assert_eq!(running.len(), 1);
    assert_eq!(
        (
            running[0].id.clone(),
            running[0].context.as_str(),
            running[0].head.as_str(),
            running[0].tasks.clone()
        ),
        (
            wf.id.clone(),
            "{\"input\":1}",
            "h1",
            vec![(0, "t0".to_owned())]
        )
    );
    let children = |list: Vec<Execution>| list.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(
        children(store.children(&tenant, &wf.id).await.expect("children")),
        [first.id.clone()]
    );

    // Its task ends: the end, what it emitted, a retry, the next task and
    // the workflow's new state, together.
    assert!(
        first.transition(ExecutionStatus::Scheduled) && first.transition(ExecutionStatus::Running)
    );
    assert!(store.start(&first).await.expect("start"));
    assert!(first.transition(ExecutionStatus::Failed));
    let ti = instance(None);
    let (by_rule, enforcement) = outcome(&ti);
    let retry = task_of("core.echo");
    let second = task_of("core.noop");
    let ended = Batch {
        completions: vec![Completion {
            execution: &first,
            emitted: vec![Emission {
                instance: &ti,
                enforcements: vec![enforcement],
                executions: vec![&by_rule],
            }],
            follow_ups: vec![&retry],
        }],
        inserts: vec![&second],
        workflows: vec![workflow_write(
            &wf,
            None,
            "h2",
            false,
            &[(0, "t0 done"), (1, "t1")],
        )],
        ..Default::default()
    };
    assert!(store.write_batch(&ended).await.expect("task ended"));
    assert_eq!(
        store
            .get_execution(&tenant, &first.id)
            .await
            .expect("get")
            .expect("first")
            .status,
        ExecutionStatus::Failed
    );
    assert!(
        store
            .get_trigger_instance(&tenant, &ti.id)
            .await
            .expect("get")
            .is_some()
    );
    assert!(
        store
            .get_execution(&tenant, &by_rule.id)
            .await
            .expect("get")
            .is_some()
    );
    let stored = store
        .workflow(&tenant, &wf.id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!((stored.head.as_str(), stored.tasks.len()), ("h2", 2));
    assert_eq!(stored.tasks[0], (0, "t0 done".to_owned()));
    assert_eq!(
        children(store.children(&tenant, &wf.id).await.expect("children")),
        [first.id.clone(), retry.id.clone(), second.id.clone()]
    );

    // The same end reported again: nothing of its batch is written.
    let late = task_of("core.echo");
    let again = Batch {
        completions: vec![Completion {
            execution: &first,
            emitted: vec![],
            follow_ups: vec![],
        }],
        inserts: vec![&late],
        workflows: vec![workflow_write(&wf, None, "h-late", false, &[])],
        ..Default::default()
    };
    assert!(!store.write_batch(&again).await.expect("late"));
    assert!(
        store
            .get_execution(&tenant, &late.id)
            .await
            .expect("get")
            .is_none()
    );
    assert_eq!(
        store
            .workflow(&tenant, &wf.id)
            .await
            .expect("get")
            .expect("wf")
            .head,
        "h2"
    );
    // A late end with records to create: those are not kept either.
    let created = task_of("core.noop");
    let undone = Batch {
        created: vec![&created],
        completions: vec![Completion {
            execution: &first,
            emitted: vec![],
            follow_ups: vec![],
        }],
        ..Default::default()
    };
    assert!(!store.write_batch(&undone).await.expect("late"));
    assert!(
        store
            .get_execution(&tenant, &created.id)
            .await
            .expect("get")
            .is_none()
    );

    // A record created and ended in one batch (a re-run that ends in its
    // first step): the created one never decides.
    let rerun = execution("examples.flow", ExecutionStatus::Requested);
    let mut ended_rerun = rerun.clone();
    assert!(ended_rerun.transition(ExecutionStatus::Failed));
    let at_once = Batch {
        created: vec![&rerun],
        completions: vec![Completion {
            execution: &ended_rerun,
            emitted: vec![],
            follow_ups: vec![],
        }],
        ..Default::default()
    };
    assert!(
        store
            .write_batch(&at_once)
            .await
            .expect("created and ended")
    );
    assert_eq!(
        store
            .get_execution(&tenant, &rerun.id)
            .await
            .expect("get")
            .expect("rerun")
            .status,
        ExecutionStatus::Failed
    );

    // The workflow ends: no longer running, still readable.
    assert!(wf.transition(ExecutionStatus::Succeeded));
    let done = Batch {
        completions: vec![Completion {
            execution: &wf,
            emitted: vec![],
            follow_ups: vec![],
        }],
        workflows: vec![workflow_write(&wf, None, "h3", true, &[])],
        ..Default::default()
    };
    assert!(store.write_batch(&done).await.expect("done"));
    assert!(store.running_workflows().await.expect("running").is_empty());
    assert_eq!(
        store
            .workflow(&tenant, &wf.id)
            .await
            .expect("get")
            .expect("wf")
            .head,
        "h3"
    );
    let elsewhere = TenantId::new("elsewhere").expect("tenant");
    assert!(
        store
            .workflow(&elsewhere, &wf.id)
            .await
            .expect("get")
            .is_none()
    );

    // A plain completion, once.
    let mut lone = execution("core.noop", ExecutionStatus::Requested);
    store.insert_execution(&lone).await.expect("insert");
    assert!(lone.transition(ExecutionStatus::Canceled));
    let emitted = instance(None);
    let emission = Emission {
        instance: &emitted,
        enforcements: vec![],
        executions: vec![],
    };
    assert!(
        store
            .complete_execution(&lone, std::slice::from_ref(&emission), &[])
            .await
            .expect("complete")
    );
    assert!(
        !store
            .complete_execution(&lone, &[], &[])
            .await
            .expect("again")
    );
    assert!(
        store
            .get_trigger_instance(&tenant, &emitted.id)
            .await
            .expect("get")
            .is_some()
    );
}
