//! What both benchmarks share (`mod common;`): a GraphQL client for the server under test.

use serde_json::{json, Value};

pub struct Bench {
    /// `http://ADDRESS/graphql`.
    pub url: String,
    pub http: reqwest::Client,
}

impl Bench {
    /// One GraphQL request; panics on GraphQL errors (a bench must not measure failures).
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = self
            .http
            .post(&self.url)
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let body: Value = request.send().await.unwrap().json().await.unwrap();
        assert!(body.get("errors").is_none(), "GraphQL errors: {body}");
        body["data"].clone()
    }
}
