//! Who acts, and as part of which request or run: the context that [events](crate::event) take
//! their actor and ray id from, and that follows work into spawned tasks.
//!
//! A request's context is its [`AuditHandle`]'s: the actor the app identified and the request's
//! ray id ([`AuditHandle::context`]). Work that leaves the request — a task it spawns, a job it
//! queues — carries the context explicitly, as `tracing` carries a span: wrap the future with
//! [`in_audit_context`](WithAuditContext::in_audit_context) and every event emitted while it
//! runs takes the actor and ray id from it (unless the event sets them itself). So the system
//! actions a user's request caused share its ray id, one query away from it, and the user who
//! started a job is recorded as the actor of what the job did.
//!
//! A background job that no request started gives itself a context of its own:
//! [`AuditContext::system`] is the system acting, with a fresh ray id that every event of the
//! run shares.
//!
//! ```
//! use audit_layer::context::{AuditContext, WithAuditContext};
//! use audit_layer::{AuditHandle, Identity};
//!
//! async fn handler(audit: AuditHandle) {
//!     audit.identify(Identity::user("usr_1"));
//!     // The work outlives the request: the user and the request's ray id go with it.
//!     tokio::spawn(
//!         async {
//!             let context = AuditContext::current().expect("in an audit context");
//!             assert_eq!(context.actor().and_then(|a| a.id.as_deref()), Some("usr_1"));
//!         }
//!         .in_audit_context(audit.context()),
//!     );
//! }
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(handler(AuditHandle::default()));
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;

use crate::identity::{AuditHandle, Identity};
use crate::record::InvalidRayId;

tokio::task_local! {
    static CURRENT: AuditContext;
}

/// An actor and a ray id that events take unless they say otherwise.
///
/// Cheap to clone when it has no actor; an actor's strings are cloned with it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditContext {
    actor: Option<Identity>,
    ray_id: Option<Arc<str>>,
}

impl AuditContext {
    /// The system acting on its own (`actor.type` and `actor.context` `system`), in a run with a
    /// ray id of its own: the events of one run of a background job share it.
    ///
    /// ```
    /// use audit_layer::context::AuditContext;
    /// use audit_layer::record::ActorType;
    ///
    /// let run = AuditContext::system();
    /// assert_eq!(run.actor().unwrap().kind, Some(ActorType::System));
    /// assert_eq!(run.ray_id().unwrap().len(), 32);
    /// assert_ne!(run.ray_id(), AuditContext::system().ray_id());
    /// ```
    pub fn system() -> Self {
        Self::new(Identity::system())
    }

    /// `actor` acting, in a run with a ray id of its own.
    pub fn new(actor: Identity) -> Self {
        Self {
            actor: Some(actor),
            ray_id: Some(new_ray_id()),
        }
    }

    /// The same context with `actor` acting.
    pub fn with_actor(mut self, actor: Identity) -> Self {
        self.actor = Some(actor);
        self
    }

    /// The same context under ray id `ray_id` (e.g. one a trusted upstream sent with a job).
    ///
    /// # Errors
    ///
    /// When `ray_id` is not 1 to 128 characters of `A-Z a-z 0-9 . _ : -`.
    ///
    /// ```
    /// use audit_layer::context::AuditContext;
    ///
    /// assert!(AuditContext::system().with_ray_id("8f3a:b").is_ok());
    /// let err = AuditContext::system().with_ray_id("no spaces").unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     r#"invalid ray id "no spaces": expected 1 to 128 characters of A-Z a-z 0-9 . _ : -"#
    /// );
    /// ```
    pub fn with_ray_id(mut self, ray_id: &str) -> Result<Self, InvalidRayId> {
        InvalidRayId::check(ray_id)?;
        self.ray_id = Some(Arc::from(ray_id));
        Ok(self)
    }

    /// Who acts, when known.
    pub fn actor(&self) -> Option<&Identity> {
        self.actor.as_ref()
    }

    /// The ray id that events in this context carry, when known.
    pub fn ray_id(&self) -> Option<&str> {
        self.ray_id.as_deref()
    }

    /// The context of the work running now: the one the innermost
    /// [`in_audit_context`](WithAuditContext::in_audit_context) (or [`scope`](Self::scope))
    /// around it gave; `None` outside any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Runs `f` (synchronous code) with this context current.
    ///
    /// ```
    /// use audit_layer::context::AuditContext;
    ///
    /// let ray = AuditContext::system().scope(|| AuditContext::current().unwrap().ray_id().map(str::to_owned));
    /// assert!(ray.is_some());
    /// assert_eq!(AuditContext::current(), None);
    /// ```
    pub fn scope<R>(self, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self, f)
    }
}

/// A ray id of the layer's own form: a UUIDv7 as 32 lowercase hex digits.
fn new_ray_id() -> Arc<str> {
    let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
    Arc::from(&*uuid::Uuid::now_v7().simple().encode_lower(&mut buf))
}

impl AuditHandle {
    /// The request's context, as it is now: the actor identified so far and the request's ray
    /// id. Take it after [`identify`](Self::identify), when handing work to another task.
    ///
    /// ```
    /// use audit_layer::{AuditHandle, Identity};
    ///
    /// let audit = AuditHandle::default();
    /// audit.identify(Identity::user("usr_1"));
    /// let context = audit.context();
    /// assert_eq!(context.actor().unwrap().id.as_deref(), Some("usr_1"));
    /// assert_eq!(context.ray_id(), None, "a handle made outside the layer has no ray id");
    /// ```
    pub fn context(&self) -> AuditContext {
        AuditContext {
            actor: self.identity(),
            ray_id: self.ray_id().map(Arc::from),
        }
    }
}

/// Makes an [`AuditContext`] follow a future, as `tracing::Instrument` does a span: while the
/// future runs (in whichever task polls it), [`AuditContext::current`] is that context, and
/// events emitted inside take their actor and ray id from it.
pub trait WithAuditContext: Future + Sized {
    /// This future, run in `context`.
    ///
    /// ```
    /// use audit_layer::context::{AuditContext, WithAuditContext};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let run = AuditContext::system();
    /// let ray = run.ray_id().unwrap().to_owned();
    /// let seen = tokio::spawn(
    ///     async { AuditContext::current().unwrap().ray_id().unwrap().to_owned() }
    ///         .in_audit_context(run),
    /// )
    /// .await
    /// .unwrap();
    /// assert_eq!(seen, ray);
    /// # }
    /// ```
    fn in_audit_context(self, context: AuditContext) -> InAuditContext<Self> {
        InAuditContext {
            inner: CURRENT.scope(context, self),
        }
    }
}

impl<F: Future> WithAuditContext for F {}

pin_project! {
    /// A future run in an [`AuditContext`]; see [`WithAuditContext`].
    pub struct InAuditContext<F: Future> {
        #[pin]
        inner: TaskLocalFuture<AuditContext, F>,
    }
}

impl<F: Future> Future for InAuditContext<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

impl<F: Future> std::fmt::Debug for InAuditContext<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InAuditContext").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_context_follows_a_future_into_a_spawned_task_and_no_further() {
        let context = AuditContext::new(Identity::user("usr_1"))
            .with_ray_id("ray-1")
            .unwrap();
        let (inside, after_spawn) = tokio::spawn(
            async {
                tokio::task::yield_now().await;
                let inside = AuditContext::current();
                // A task spawned without the adapter does not inherit it: the adapter is explicit.
                let bare = tokio::spawn(async { AuditContext::current() })
                    .await
                    .unwrap();
                (inside, bare)
            }
            .in_audit_context(context.clone()),
        )
        .await
        .unwrap();
        assert_eq!(inside, Some(context));
        assert_eq!(after_spawn, None);
        assert_eq!(AuditContext::current(), None);
    }

    #[tokio::test]
    async fn the_innermost_context_wins() {
        let outer = AuditContext::system().with_ray_id("outer").unwrap();
        let inner = AuditContext::new(Identity::user("usr_2"))
            .with_ray_id("inner")
            .unwrap();
        let seen = async {
            let nested = async { AuditContext::current().unwrap() }
                .in_audit_context(inner)
                .await;
            (nested, AuditContext::current().unwrap())
        }
        .in_audit_context(outer)
        .await;
        assert_eq!(seen.0.ray_id(), Some("inner"));
        assert_eq!(seen.1.ray_id(), Some("outer"));
    }
}
