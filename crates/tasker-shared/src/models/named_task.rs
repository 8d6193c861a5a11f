use super::StoreError;
use crate::queue::{domain_events_queue, worker_queue, QueueClient};
use crate::template::TaskTemplate;
use parking_lot::RwLock;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOutcome {
    Created,
    /// The same body was already registered under this version.
    Unchanged,
}

#[derive(Debug, Clone)]
pub struct RegisteredTemplate {
    pub named_task_uuid: Uuid,
    pub template: TaskTemplate,
}

/// (namespace, name, version).
type TemplateKey = (String, String, String);

/// Templates as registered in the database; orchestration reads templates only from here.
/// A registered version never changes (registering another body under it is refused), so
/// `find` keeps what it has read: creating a task then costs no lookup and no decoding.
#[derive(Debug, Clone)]
pub struct TemplateRegistry {
    pool: PgPool,
    found: Arc<RwLock<HashMap<TemplateKey, RegisteredTemplate>>>,
}

impl TemplateRegistry {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            found: Arc::default(),
        }
    }

    /// Creates a validated template's namespace worker and domain-event queues, then
    /// registers the template: queues first, so a task created the moment its template is
    /// visible finds them. Re-registering a version with a different body is refused:
    /// running tasks refer to the body they were created from.
    pub async fn register(&self, template: &TaskTemplate) -> Result<RegisterOutcome, StoreError> {
        let queues = QueueClient::new(self.pool.clone()).await;
        for queue in [
            worker_queue(&template.namespace),
            domain_events_queue(&template.namespace),
        ] {
            let queue = queue.map_err(StoreError::InvalidName)?;
            queues.ensure_queue(&queue).await?;
        }
        self.register_body(template).await
    }

    async fn register_body(&self, template: &TaskTemplate) -> Result<RegisterOutcome, StoreError> {
        let body = serde_json::to_value(template).expect("templates serialize to JSON");
        let mut tx = self.pool.begin().await?;
        // When another process inserts the namespace at the same moment, ON CONFLICT waits
        // for it and does nothing, but this statement's snapshot predates its row: the
        // next statement sees it.
        let mut ns = None;
        for _ in 0..3 {
            ns = sqlx::query_scalar(
                "WITH ins AS (INSERT INTO tasker.namespaces (name) VALUES ($1)
                              ON CONFLICT (name) DO NOTHING RETURNING namespace_uuid)
                 SELECT namespace_uuid FROM ins
                 UNION ALL SELECT namespace_uuid FROM tasker.namespaces WHERE name = $1
                 LIMIT 1",
            )
            .bind(&template.namespace)
            .fetch_optional(&mut *tx)
            .await?;
            if ns.is_some() {
                break;
            }
        }
        let ns: Uuid = ns.ok_or_else(|| StoreError::NotFound {
            what: "namespace",
            id: template.namespace.clone(),
        })?;
        let inserted: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO tasker.named_tasks (namespace_uuid, name, version, description, template)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (namespace_uuid, name, version) DO NOTHING
             RETURNING named_task_uuid",
        )
        .bind(ns)
        .bind(&template.name)
        .bind(&template.version)
        .bind(&template.description)
        .bind(&body)
        .fetch_optional(&mut *tx)
        .await?;
        if inserted.is_some() {
            tx.commit().await?;
            return Ok(RegisterOutcome::Created);
        }
        let existing: serde_json::Value = sqlx::query_scalar(
            "SELECT template FROM tasker.named_tasks WHERE namespace_uuid = $1 AND name = $2 AND version = $3",
        )
        .bind(ns)
        .bind(&template.name)
        .bind(&template.version)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        if existing == body {
            Ok(RegisterOutcome::Unchanged)
        } else {
            Err(StoreError::TemplateVersionConflict {
                identity: template.identity(),
            })
        }
    }

    pub async fn find(
        &self,
        namespace: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<RegisteredTemplate>, StoreError> {
        let key = (namespace.to_string(), name.to_string(), version.to_string());
        if let Some(found) = self.found.read().get(&key) {
            return Ok(Some(found.clone()));
        }
        let row: Option<(Uuid, serde_json::Value)> = sqlx::query_as(
            "SELECT nt.named_task_uuid, nt.template
               FROM tasker.named_tasks nt JOIN tasker.namespaces n USING (namespace_uuid)
              WHERE n.name = $1 AND nt.name = $2 AND nt.version = $3",
        )
        .bind(namespace)
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        let found = row.map(|(id, body)| decode(id, body)).transpose()?;
        if let Some(registered) = &found {
            self.found.write().insert(key, registered.clone());
        }
        Ok(found)
    }

    pub async fn list(&self) -> Result<Vec<RegisteredTemplate>, StoreError> {
        let rows: Vec<(Uuid, serde_json::Value)> = sqlx::query_as(
            "SELECT nt.named_task_uuid, nt.template
               FROM tasker.named_tasks nt JOIN tasker.namespaces n USING (namespace_uuid)
              ORDER BY n.name, nt.name, nt.version",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, body)| decode(id, body))
            .collect()
    }
}

fn decode(id: Uuid, body: serde_json::Value) -> Result<RegisteredTemplate, StoreError> {
    let template = serde_json::from_value(body).map_err(|e| StoreError::Corrupt {
        what: "template",
        id,
        reason: e.to_string(),
    })?;
    Ok(RegisteredTemplate {
        named_task_uuid: id,
        template,
    })
}
