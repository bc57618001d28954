//! PostgreSQL: the presence projection, the user directory, consumer offsets and aggregator
//! snapshots. Schema changes are migrations (`migrations/`), applied at start-up by every
//! role that connects; sqlx serializes concurrent runs with an advisory lock.

use std::collections::HashMap;
use std::time::Duration;

use presence_events::{Details, Millis, PresenceChange, TenantId, UserId};
use serde::Serialize;
use sqlx::postgres::{PgPool, PgPoolOptions};

/// Snapshots larger than this are written on a connection that is closed afterwards.
const LARGE_SNAPSHOT: usize = 1 << 20;

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Connecting, or the query itself.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the schema.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value this build cannot read.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

/// A user of the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRecord {
    /// The tenant.
    pub tenant: TenantId,
    /// The user.
    pub user: UserId,
    /// Display / search name.
    pub username: Option<String>,
    /// Visibility class.
    pub class: String,
}

/// A row of the presence projection.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceRow {
    /// The tenant.
    pub tenant: TenantId,
    /// The user.
    pub user: UserId,
    /// Visibility class.
    pub class: String,
    /// Status (`online`, `offline`, `live`, `in_call`).
    pub status: String,
    /// Whether online.
    pub online: bool,
    /// Last seen.
    pub last_seen: Option<Millis>,
    /// Event-log sequence of the change the row reflects.
    pub seq: u64,
}

/// The columns of a [`PresenceRow`].
macro_rules! row_select {
    () => {
        "SELECT tenant, user_id, class, status, online, \
         (extract(epoch from last_seen) * 1000)::int8 AS last_seen_ms, seq FROM presence"
    };
}

/// The database.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Store {
    /// Connects (lazily: the pool opens connections when first needed) and applies migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            // A database that is down fails a write (and the persister's readiness) within
            // 2 s instead of holding it for the default 30 s.
            .acquire_timeout(Duration::from_secs(2))
            .connect(url)
            .await?;
        let store = Self { pool };
        MIGRATOR.run(&store.pool).await?;
        Ok(store)
    }

    /// The highest sequence recorded anywhere (rows, offsets, snapshots): an in-memory log
    /// starting after it never reuses a sequence the database has seen.
    pub async fn highest_sequence(&self) -> Result<u64, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar(
            "SELECT GREATEST(
                (SELECT max(seq) FROM presence),
                (SELECT max(stream_seq) FROM consumer_offsets),
                (SELECT max(seq) FROM aggregator_snapshots))",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(seq.unwrap_or(0).max(0) as u64)
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Writes the newest change of each user in one statement (never over a newer `seq`) and,
    /// in the same transaction, the consumer's offset. Returns the rows changed.
    pub async fn write_presence(
        &self,
        changes: &[PresenceChange],
        offset: Option<(&str, &str, u64)>,
    ) -> Result<u64, StoreError> {
        // One row per user: a statement may not touch the same row twice.
        let mut newest: HashMap<(&str, &str), &PresenceChange> = HashMap::new();
        for c in changes {
            let key = (c.tenant.as_str(), c.user.as_str());
            if newest.get(&key).is_none_or(|known| known.seq < c.seq) {
                newest.insert(key, c);
            }
        }
        let n = newest.len();
        let (mut tenants, mut users, mut classes, mut statuses) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut onlines, mut seen, mut details, mut seqs) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for c in newest.values() {
            tenants.push(c.tenant.as_str());
            users.push(c.user.as_str());
            classes.push(c.class.as_str());
            statuses.push(c.status.as_str());
            onlines.push(c.online);
            seen.push(c.last_seen.map(|t| t.0 as i64));
            details.push(c.details.as_ref().map(details_json));
            seqs.push(c.seq as i64);
        }
        let mut tx = self.pool.begin().await?;
        let written = if n == 0 {
            0
        } else {
            sqlx::query(
                "INSERT INTO presence (tenant, user_id, class, status, online, last_seen, details, seq, updated_at)
                 SELECT t, u, k, s, o,
                        CASE WHEN ls IS NULL THEN NULL ELSE to_timestamp(ls / 1000.0) END,
                        d::jsonb, q, now()
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::int8[], $7::text[], $8::int8[])
                      AS x(t, u, k, s, o, ls, d, q)
                 ON CONFLICT (tenant, user_id) DO UPDATE SET
                    class = EXCLUDED.class, status = EXCLUDED.status, online = EXCLUDED.online,
                    last_seen = EXCLUDED.last_seen, details = EXCLUDED.details,
                    seq = EXCLUDED.seq, updated_at = now()
                 WHERE presence.seq < EXCLUDED.seq",
            )
            .bind(&tenants)
            .bind(&users)
            .bind(&classes)
            .bind(&statuses)
            .bind(&onlines)
            .bind(&seen)
            .bind(&details)
            .bind(&seqs)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        };
        if let Some((namespace, consumer, stream_seq)) = offset {
            sqlx::query(
                "INSERT INTO consumer_offsets (namespace, consumer, stream_seq) VALUES ($1, $2, $3)
                 ON CONFLICT (namespace, consumer) DO UPDATE
                 SET stream_seq = GREATEST(consumer_offsets.stream_seq, EXCLUDED.stream_seq), updated_at = now()",
            )
            .bind(namespace)
            .bind(consumer)
            .bind(stream_seq as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(written)
    }

    /// The stream sequence a consumer has durably processed (0 if never).
    pub async fn consumer_offset(
        &self,
        namespace: &str,
        consumer: &str,
    ) -> Result<u64, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar(
            "SELECT stream_seq FROM consumer_offsets WHERE namespace = $1 AND consumer = $2",
        )
        .bind(namespace)
        .bind(consumer)
        .fetch_optional(&self.pool)
        .await?;
        Ok(seq.unwrap_or(0).max(0) as u64)
    }

    /// Replaces the aggregator snapshot of `namespace` if it was saved under an older lease
    /// epoch, or under the same one at an older `seq`. Returns whether it did: `false` means
    /// an owner of a newer epoch has saved since (the caller was deposed) or nothing is newer.
    pub async fn save_snapshot(
        &self,
        namespace: &str,
        seq: u64,
        state: &str,
        epoch: u64,
    ) -> Result<bool, StoreError> {
        let query = sqlx::query(
            "INSERT INTO aggregator_snapshots (namespace, seq, state, epoch) VALUES ($1, $2, $3, $4)
             ON CONFLICT (namespace) DO UPDATE
             SET seq = EXCLUDED.seq, state = EXCLUDED.state, epoch = EXCLUDED.epoch, saved_at = now()
             WHERE aggregator_snapshots.epoch < EXCLUDED.epoch
                OR (aggregator_snapshots.epoch = EXCLUDED.epoch AND aggregator_snapshots.seq < EXCLUDED.seq)",
        )
        .bind(namespace)
        .bind(seq as i64)
        .bind(state)
        .bind(epoch as i64);
        let mut conn = self.pool.acquire().await?;
        // A connection keeps the room of the largest message it wrote: one that carried a
        // large snapshot (a crowd the fold has since forgotten) is closed rather than pooled.
        if state.len() > LARGE_SNAPSHOT {
            conn.close_on_drop();
        }
        let done = query.execute(&mut *conn).await?;
        Ok(done.rows_affected() > 0)
    }

    /// The newest aggregator snapshot of `namespace`: (sequence, state as JSON).
    pub async fn load_snapshot(
        &self,
        namespace: &str,
    ) -> Result<Option<(u64, String)>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, state FROM aggregator_snapshots WHERE namespace = $1")
                .bind(namespace)
                .fetch_optional(&mut *conn)
                .await?;
        // As for a save: the room a large snapshot took is not kept in the pool.
        if row
            .as_ref()
            .is_some_and(|(_, state)| state.len() > LARGE_SNAPSHOT)
        {
            conn.close_on_drop();
        }
        Ok(row.map(|(seq, state)| (seq.max(0) as u64, state)))
    }

    /// Creates or updates users of the directory. `username: None` keeps a known name.
    pub async fn upsert_users(&self, users: &[UserRecord]) -> Result<(), StoreError> {
        if users.is_empty() {
            return Ok(());
        }
        let mut newest: HashMap<(&str, &str), &UserRecord> = HashMap::new();
        for u in users {
            newest.insert((u.tenant.as_str(), u.user.as_str()), u);
        }
        let tenants: Vec<&str> = newest.values().map(|u| u.tenant.as_str()).collect();
        let ids: Vec<&str> = newest.values().map(|u| u.user.as_str()).collect();
        let names: Vec<Option<&str>> = newest.values().map(|u| u.username.as_deref()).collect();
        let classes: Vec<&str> = newest.values().map(|u| u.class.as_str()).collect();
        sqlx::query(
            "INSERT INTO users (tenant, user_id, username, class)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])
             ON CONFLICT (tenant, user_id) DO UPDATE SET
                username = COALESCE(EXCLUDED.username, users.username),
                class = EXCLUDED.class, updated_at = now()",
        )
        .bind(&tenants)
        .bind(&ids)
        .bind(&names)
        .bind(&classes)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Users of `tenant` whose username contains `query`, compared literally (every character,
    /// `%`, `_` and `\` included, is itself) and case-insensitively.
    pub async fn search_users(
        &self,
        tenant: &TenantId,
        query: &str,
        limit: u32,
    ) -> Result<Vec<UserRecord>, StoreError> {
        let rows: Vec<(String, Option<String>, String)> = sqlx::query_as(
            "SELECT user_id, username, class FROM users
             WHERE tenant = $1 AND username IS NOT NULL AND strpos(lower(username), lower($2)) > 0
             ORDER BY lower(username), user_id LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(query)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(user, username, class)| {
                Ok(UserRecord {
                    tenant: tenant.clone(),
                    user: UserId::parse(user).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    username,
                    class,
                })
            })
            .collect()
    }

    /// Every row of the presence projection that says online.
    pub async fn online_rows(&self) -> Result<Vec<PresenceRow>, StoreError> {
        let rows: Vec<RawRow> = sqlx::query_as(concat!(row_select!(), " WHERE online"))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(RawRow::parse).collect()
    }

    /// The projection's rows of the given users of `tenant`.
    pub async fn rows_of(
        &self,
        tenant: &TenantId,
        users: &[UserId],
    ) -> Result<Vec<PresenceRow>, StoreError> {
        let ids: Vec<&str> = users.iter().map(UserId::as_str).collect();
        let rows: Vec<RawRow> = sqlx::query_as(concat!(
            row_select!(),
            " WHERE tenant = $1 AND user_id = ANY($2)"
        ))
        .bind(tenant.as_str())
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(RawRow::parse).collect()
    }
}

#[derive(sqlx::FromRow)]
struct RawRow {
    tenant: String,
    user_id: String,
    class: String,
    status: String,
    online: bool,
    last_seen_ms: Option<i64>,
    seq: i64,
}

impl RawRow {
    fn parse(self) -> Result<PresenceRow, StoreError> {
        let corrupt = |e: presence_events::IdError| StoreError::Corrupt(e.to_string());
        Ok(PresenceRow {
            tenant: TenantId::parse(self.tenant).map_err(corrupt)?,
            user: UserId::parse(self.user_id).map_err(corrupt)?,
            class: self.class,
            status: self.status,
            online: self.online,
            last_seen: self.last_seen_ms.map(|ms| Millis(ms.max(0) as u64)),
            seq: self.seq.max(0) as u64,
        })
    }
}

fn details_json(details: &Details) -> String {
    serde_json::to_string(details).unwrap_or_else(|_| "{}".into())
}
