use reqwest::StatusCode;
use serde_json::Value;

use super::{Node, user_token};

/// A user's calls to one node's JSON API.
pub struct UserApi {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl UserApi {
    pub fn new(node: &impl Node, user: &str) -> Self {
        Self { base: node.url(""), token: user_token(user), http: reqwest::Client::new() }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.bearer_auth(&self.token).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.http.put(format!("{}{path}", self.base)).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.delete(format!("{}{path}", self.base))).await
    }

    pub async fn delete_json(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.http.delete(format!("{}{path}", self.base)).json(&body)).await
    }

    /// Every item, following `next` page by page.
    pub async fn list_all(&self, query: &str, limit: usize) -> Vec<Value> {
        let mut items = Vec::new();
        let mut before: Option<String> = None;
        for _ in 0..1000 {
            let mut path = format!("/v1/notifications?limit={limit}{query}");
            if let Some(b) = &before {
                path.push_str(&format!("&before={b}"));
            }
            let (status, page) = self.get(&path).await;
            assert_eq!(status, 200, "{page}");
            items.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next"].as_str() {
                Some(next) => before = Some(next.to_owned()),
                None => return items,
            }
        }
        panic!("pagination did not end");
    }
}
