//! Calling the running demo over HTTP as a user would: with an API token, a dashboard session
//! or nothing, remembering every `x-request-id` it is answered with.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::demo::Demo;
use crate::seed::{ADMIN_TOKEN, OTHER_TOKEN, USER_AGENT};

/// How a request authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    /// No credentials.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// The dashboard session cookie.
    Session(String),
}

impl Auth {
    /// `acc_demo`'s seeded API token (alice's).
    pub fn admin() -> Self {
        Self::Bearer(ADMIN_TOKEN.into())
    }

    /// `acc_other`'s seeded API token (bob's).
    pub fn other() -> Self {
        Self::Bearer(OTHER_TOKEN.into())
    }
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The `x-request-id` header: the record's `raw.cf_ray_id`.
    pub ray_id: Option<String>,
    /// Every `Set-Cookie` header.
    pub set_cookie: Vec<String>,
    /// The body, as text.
    pub text: String,
}

impl Reply {
    /// The body as JSON; panics if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    /// The `x-request-id`; panics if there is none.
    pub fn ray(&self) -> String {
        self.ray_id
            .clone()
            .unwrap_or_else(|| panic!("no x-request-id on an audited answer: {self:?}"))
    }

    /// Asserts the status, naming `what` on failure.
    #[track_caller]
    pub fn expect(self, status: u16, what: &str) -> Self {
        assert_eq!(self.status, status, "{what}: {}", self.text);
        self
    }
}

/// A client of one running app that remembers every `x-request-id` it was answered with.
#[derive(Debug)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    rays: Mutex<Vec<String>>,
}

impl Api {
    /// A client of `demo`, sending [`USER_AGENT`].
    pub fn new(demo: &Demo) -> Self {
        Self {
            client: reqwest::Client::builder()
                .user_agent(USER_AGENT)
                .timeout(Duration::from_secs(20))
                .build()
                .expect("a reqwest client"),
            base: demo.base().to_owned(),
            rays: Mutex::new(Vec::new()),
        }
    }

    /// A request to `path` (with the `query` parameters, if any) carrying `auth`, for the
    /// caller to complete (headers, a body) and [`send`](Self::send).
    pub fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        auth: &Auth,
    ) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.base);
        // Without parameters, no `?` at all (an empty query is still a query).
        let url = if query.is_empty() {
            reqwest::Url::parse(&url)
        } else {
            reqwest::Url::parse_with_params(&url, query)
        }
        .expect("a valid URL");
        let request = self.client.request(method, url);
        match auth {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Session(session) => {
                request.header("cookie", format!("theme=dark; demo_session={session}"))
            }
        }
    }

    /// Sends `request` and reads the answer whole.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("the app answers");
        let status = response.status().as_u16();
        let ray_id = response
            .headers()
            .get("x-request-id")
            .map(|v| v.to_str().expect("an ASCII x-request-id").to_owned());
        let set_cookie = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().expect("an ASCII Set-Cookie").to_owned())
            .collect();
        let text = response.text().await.expect("the body is read");
        if let Some(ray) = &ray_id {
            self.rays
                .lock()
                .expect("the lock is not poisoned")
                .push(ray.clone());
        }
        Reply {
            status,
            ray_id,
            set_cookie,
            text,
        }
    }

    /// `method path?query` with `auth` and a JSON `body`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        auth: &Auth,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self.request(method, path, query, auth);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str, auth: &Auth) -> Reply {
        self.call(Method::GET, path, &[], auth, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, auth: &Auth, body: &Value) -> Reply {
        self.call(Method::POST, path, &[], auth, Some(body)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, auth: &Auth, body: &Value) -> Reply {
        self.call(Method::PUT, path, &[], auth, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str, auth: &Auth) -> Reply {
        self.call(Method::DELETE, path, &[], auth, None).await
    }

    /// Every `x-request-id` answered so far, in order.
    pub fn rays(&self) -> Vec<String> {
        self.rays.lock().expect("the lock is not poisoned").clone()
    }

    /// Logs in; the answer and the session cookie's value.
    pub async fn login(&self, email: &str, password: &str) -> (Reply, Option<String>) {
        let reply = self
            .post(
                "/login",
                &Auth::None,
                &json!({"email": email, "password": password}),
            )
            .await;
        let session = reply.set_cookie.iter().find_map(|c| {
            c.split(';')
                .next()?
                .trim()
                .strip_prefix("demo_session=")
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        });
        (reply, session)
    }
}
