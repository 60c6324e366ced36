//! The plain HTTP surface: health, and a GraphiQL that loads nothing from elsewhere.

use crate::helpers::*;

#[tokio::test]
async fn healthz_answers() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn graphiql_is_served_from_this_server_only() {
    let app = spawn_app().await;
    let page = app.http.get(app.url("/graphql")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("GraphiQL"));
    let mut sources = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for part in html.split(attribute).skip(1) {
            sources.push(part.split('"').next().unwrap().to_owned());
        }
    }
    assert_eq!(sources.len(), 4, "{sources:?}");
    for source in sources {
        assert!(
            source.starts_with("/graphiql/assets/"),
            "not self-hosted: {source}"
        );
        let asset = app.http.get(app.url(&source)).send().await.unwrap();
        assert_eq!(
            asset.status(),
            200,
            "{source} missing: run scripts/web-assets.sh"
        );
        assert!(asset.bytes().await.unwrap().len() > 1000);
    }
    let missing = app
        .http
        .get(app.url("/graphiql/assets/evil.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    app.stop().await;
}
