//! The store's behaviour, written once and run against each engine: what
//! SQLite does, PostgreSQL does the same. Each engine's tests call these
//! with a store of its own.

use squall_core::TenantId;
use squall_core::kv::{KvEntry, KvError, KvStore};

/// What the behaviour tests need of an engine beyond [`KvStore`].
pub(crate) trait Engine: KvStore + Clone + 'static {
    /// The datastore listing with user keys and decryption (the API's).
    async fn listing(
        &self,
        tenant: &TenantId,
        prefix: &str,
        decrypt: bool,
    ) -> Result<Vec<KvEntry>, KvError>;
    /// Every stored value as it is at rest.
    async fn values_at_rest(&self) -> Vec<String>;
    /// The same database, without the key that seals secrets.
    fn keyless(&self) -> Self;
}

/// The secret value [`datastore`] writes.
pub(crate) const SECRET: &str = "hunter2-plain";

impl Engine for crate::Store {
    async fn listing(
        &self,
        tenant: &TenantId,
        prefix: &str,
        decrypt: bool,
    ) -> Result<Vec<KvEntry>, KvError> {
        self.kv_list(tenant, prefix, decrypt).await
    }

    async fn values_at_rest(&self) -> Vec<String> {
        self.read_async(|conn| {
            let mut stmt = conn.prepare("SELECT value FROM kv")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await
        .expect("read")
    }

    fn keyless(&self) -> Self {
        let mut other = self.clone();
        other.secret_key = None;
        other
    }
}

impl Engine for crate::pg::PgStore {
    async fn listing(
        &self,
        tenant: &TenantId,
        prefix: &str,
        decrypt: bool,
    ) -> Result<Vec<KvEntry>, KvError> {
        self.kv_list(tenant, prefix, decrypt).await
    }

    async fn values_at_rest(&self) -> Vec<String> {
        let client = self.client().await.expect("client");
        client
            .query("SELECT value FROM kv", &[])
            .await
            .expect("read")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    fn keyless(&self) -> Self {
        let mut other = self.clone();
        other.secret_key = None;
        other
    }
}

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
        store.listing(&t, "es_", true).await.expect("list")[0].value,
        SECRET
    );
    assert!(
        !store
            .values_at_rest()
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
    assert!(keys(store.listing(&t, "", false).await.expect("list")).contains(&user_key));
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
        .listing(&t, "", false)
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
