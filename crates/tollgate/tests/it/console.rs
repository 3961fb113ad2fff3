//! The operators' console at `/ui` over real HTTP: login and logout, the
//! session cookie's flags, CSRF on every mutation, no data without a
//! session, key management through forms, the request-log filters, and
//! `admin_listen` keeping `/ui` off the public listener.

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{ADMIN_KEY, Harness, chat_body};

/// `RequestBuilder::form` without reqwest's `form` feature.
pub trait FormBody {
    fn form_body<T: serde::Serialize + ?Sized>(self, form: &T) -> Self;
}

impl FormBody for reqwest::RequestBuilder {
    fn form_body<T: serde::Serialize + ?Sized>(self, form: &T) -> Self {
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap())
    }
}

/// A browser-like client that does not follow redirects, so each answer
/// can be checked.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub struct Session {
    pub base: String,
    pub cookie: String,
    pub http: reqwest::Client,
}

/// Logs in through the form; returns the session and the raw `Set-Cookie`.
pub async fn login(base: &str) -> (Session, String) {
    let http = client();
    let resp = http
        .post(format!("{base}/ui/login"))
        .form_body(&[("admin_key", ADMIN_KEY)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], "/ui");
    let set = resp.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    let cookie = set.split(';').next().unwrap().to_owned();
    (
        Session {
            base: base.to_owned(),
            cookie,
            http,
        },
        set,
    )
}

impl Session {
    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, String) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .form_body(form)
            .send()
            .await
            .unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    /// The CSRF token the pages embed in their forms.
    pub async fn csrf(&self) -> String {
        let (_, page) = self.get("/ui/keys").await;
        between(&page, "name=\"csrf\" value=\"", "\"").to_owned()
    }
}

pub fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("`{start}` not in:\n{text}"))
        + start.len();
    let len = text[from..].find(end).unwrap();
    &text[from..from + len]
}

const PAGES: &[&str] = &["/ui", "/ui/teams", "/ui/keys", "/ui/requests", "/ui/audit"];

#[tokio::test]
async fn login_sets_a_strict_http_only_session_and_logout_ends_it() {
    let h = Harness::start("").await;
    let http = client();
    // No session: every page redirects to the login form and shows nothing.
    for page in PAGES {
        let resp = http.get(format!("{}{page}", h.url)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{page}");
        assert_eq!(resp.headers()[LOCATION], "/ui/login", "{page}");
        assert!(
            resp.text().await.unwrap().is_empty(),
            "{page} shows no data"
        );
    }
    // A forged or stale cookie is no session either.
    let resp = http
        .get(format!("{}/ui/keys", h.url))
        .header(COOKIE, "tollgate_session=00ff")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);

    let form = http
        .get(format!("{}/ui/login", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    let form = form.text().await.unwrap();
    assert!(
        form.contains("<form method=\"post\" action=\"/ui/login\""),
        "{form}"
    );

    // A wrong key is refused, and no cookie is set.
    let resp = http
        .post(format!("{}/ui/login", h.url))
        .form_body(&[("admin_key", "not-the-key")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().get(SET_COOKIE).is_none());
    assert!(resp.text().await.unwrap().contains("not the admin key"));

    let (s, set_cookie) = login(&h.url).await;
    let flags: Vec<&str> = set_cookie.split(';').map(str::trim).collect();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(flags.contains(&flag), "cookie lacks {flag}: {set_cookie}");
    }
    // Plain HTTP here, so not `Secure` (a browser would drop it).
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    // The admin key is never in the browser: not in the cookie, not in a page.
    assert!(!set_cookie.contains(ADMIN_KEY));
    for page in PAGES {
        let (status, body) = s.get(page).await;
        assert_eq!(status, StatusCode::OK, "{page}: {body}");
        assert!(!body.contains(ADMIN_KEY), "{page} shows the admin key");
    }
    let resp = s
        .http
        .get(format!("{}/ui", h.url))
        .header(COOKIE, &s.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert!(
        resp.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );

    // Logout without the CSRF token changes nothing.
    let (status, _) = s.post("/ui/logout", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(s.get("/ui").await.0, StatusCode::OK);
    let csrf = s.csrf().await;
    let resp = s
        .http
        .post(format!("{}/ui/logout", h.url))
        .header(COOKIE, &s.cookie)
        .form_body(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], "/ui/login");
    assert!(
        resp.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    // The old cookie is dead on the server, not just in the browser.
    for page in PAGES {
        assert_eq!(s.get(page).await.0, StatusCode::SEE_OTHER, "{page}");
    }
    // Login and logout are in the audit log under the session; the
    // failed login is not (anyone could fill the table with those).
    let (_, audit) = h.admin(Method::GET, "/admin/audit", None).await;
    let session_id = s.cookie.split_once('=').unwrap().1;
    let actor = format!("ui:{}", &session_id[..8]);
    let rows: Vec<(&str, &str)> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["actor"].as_str().unwrap(), r["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rows,
        vec![
            (actor.as_str(), "session.logout"),
            (actor.as_str(), "session.login")
        ]
    );
}

#[tokio::test]
async fn every_mutation_needs_the_session_csrf_token() {
    let h = Harness::start("").await;
    let (s, _) = login(&h.url).await;
    let csrf = s.csrf().await;
    let (other, _) = login(&h.url).await;
    let other_csrf = other.csrf().await;
    assert_ne!(csrf, other_csrf, "tokens are per session");
    let (id, _) = h.key(json!({})).await;
    let revoke = format!("/ui/keys/{id}/revoke");
    let rotate = format!("/ui/keys/{id}/rotate");
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/ui/keys", vec![("team", "t1"), ("name", "x")]),
        ("/ui/teams", vec![("id", "newteam")]),
        (revoke.as_str(), vec![]),
        (rotate.as_str(), vec![("grace_seconds", "0")]),
        ("/ui/logout", vec![]),
    ];
    for (path, fields) in &cases {
        for bad in [None, Some(""), Some("0000"), Some(other_csrf.as_str())] {
            let mut form = fields.clone();
            if let Some(b) = bad {
                form.push(("csrf", b));
            }
            let (status, body) = s.post(path, &form).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path} with {bad:?}: {body}");
            assert!(body.contains("CSRF"), "{body}");
        }
    }
    // Nothing changed: no key created, the key still live, no team, still logged in.
    let (_, keys) = h.admin(Method::GET, "/admin/keys", None).await;
    assert_eq!(keys["data"].as_array().unwrap().len(), 1);
    assert_eq!(keys["data"][0]["status"], "active");
    let (status, _) = h.admin(Method::GET, "/admin/teams/newteam", None).await;
    assert_eq!(status, 404);
    assert_eq!(s.get("/ui").await.0, StatusCode::OK);
    let (_, audit) = h.admin(Method::GET, "/admin/audit?actor=", None).await;
    assert!(
        audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["actor"] == "admin-key" || r["action"] == "session.login"),
        "a refused form is not an audited change: {audit}"
    );
}

#[tokio::test]
async fn a_team_created_through_the_form_can_opt_out_of_the_cache() {
    let h = Harness::start("").await;
    let (s, _) = login(&h.url).await;
    let csrf = s.csrf().await;
    for (id, no_cache) in [("cached", None), ("uncached", Some("on"))] {
        let mut form = vec![("csrf", csrf.as_str()), ("id", id)];
        form.extend(no_cache.map(|v| ("no_cache", v)));
        let (status, page) = s.post("/ui/teams", &form).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains(&format!("Team `{id}` created.")), "{page}");
    }
    let (_, on) = h.admin(Method::GET, "/admin/teams/cached", None).await;
    assert_eq!(on["cache"], true, "{on}");
    let (_, off) = h.admin(Method::GET, "/admin/teams/uncached", None).await;
    assert_eq!(off["cache"], false, "{off}");
    let (_, page) = s.get("/ui/teams").await;
    let row = between(&page, "data-team=\"uncached\"", "</tr>");
    assert!(row.contains("<td>off</td>"), "{row}");
    let row = between(&page, "data-team=\"cached\"", "</tr>");
    assert!(row.contains("<td>on</td>"), "{row}");
    // The audit row records the opt-out as the change it made.
    let (_, audit) = h
        .admin(Method::GET, "/admin/audit?action=team.create", None)
        .await;
    assert!(
        audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["target"] == "team:uncached" && r["change"]["cache"] == false),
        "{audit}"
    );
}

#[tokio::test]
async fn keys_are_created_revealed_once_rotated_and_revoked_through_forms() {
    let h = Harness::start("").await;
    let (s, _) = login(&h.url).await;
    let csrf = s.csrf().await;
    let (status, page) = s
        .post(
            "/ui/keys",
            &[
                ("csrf", &csrf),
                ("team", "t1"),
                ("name", "from-ui"),
                ("budget_usd", "2.5"),
                ("period", "daily"),
                ("expires_days", "7"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{page}");
    let key = between(&page, "id=\"revealed-key\">", "<").to_owned();
    assert!(key.starts_with("sk-tg-"), "{key}");
    // It works on the data plane.
    let resp = h.chat(&key, &chat_body("hi from the console")).await;
    assert_eq!(resp.status(), 200);
    // The list never shows it again, only its prefix.
    let (_, list) = s.get("/ui/keys").await;
    assert!(!list.contains(&key));
    assert!(
        list.contains("from-ui") && list.contains("$2.50 daily"),
        "{list}"
    );
    let (_, keys) = h.admin(Method::GET, "/admin/keys", None).await;
    let rec = &keys["data"][0];
    assert_eq!(rec["budget_usd"], 2.5);
    assert!(rec["expires_at"].is_string(), "{rec}");
    let id = rec["id"].as_str().unwrap().to_owned();

    // A bad budget is explained, nothing is created.
    let (status, page) = s
        .post(
            "/ui/keys",
            &[("csrf", &csrf), ("team", "t1"), ("budget_usd", "lots")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("is not a USD amount"), "{page}");
    let (status, page) = s
        .post("/ui/keys", &[("csrf", &csrf), ("team", "nope")])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("no team `nope`"), "{page}");

    // Rotate with a grace period: both secrets work, the new one is shown once.
    let (status, page) = s
        .post(
            &format!("/ui/keys/{id}/rotate"),
            &[("csrf", &csrf), ("grace_seconds", "3600")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let rotated = between(&page, "id=\"revealed-key\">", "<").to_owned();
    assert_ne!(rotated, key);
    assert!(
        page.contains("previous secret keeps working until"),
        "{page}"
    );
    assert_eq!(h.chat(&key, &chat_body("old")).await.status(), 200);
    assert_eq!(h.chat(&rotated, &chat_body("new")).await.status(), 200);

    // Revoke: refused at once.
    let (status, page) = s
        .post(&format!("/ui/keys/{id}/revoke"), &[("csrf", &csrf)])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("revoked"), "{page}");
    for k in [&key, &rotated] {
        let resp = h.chat(k, &chat_body("after revoke")).await;
        assert_eq!(resp.status(), 401);
    }

    // Each change is in the audit log under this session.
    let (_, audit) = h.admin(Method::GET, "/admin/audit", None).await;
    let rows = audit["data"].as_array().unwrap();
    let ui: Vec<(&str, &str, u64)> = rows
        .iter()
        .filter(|r| r["actor"].as_str().unwrap().starts_with("ui:"))
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["target"].as_str().unwrap(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let target = format!("key:{id}");
    assert_eq!(
        ui,
        vec![
            ("key.revoke", target.as_str(), 200),
            ("key.rotate", target.as_str(), 200),
            ("key.create", "team:nope", 404),
            ("key.create", "team:t1", 400),
            ("key.create", target.as_str(), 201),
            ("session.login", "ui", 303),
        ]
    );
    let text = audit.to_string();
    assert!(
        !text.contains(&key) && !text.contains(&rotated),
        "no key in the log"
    );
    assert!(!text.contains(&csrf), "no CSRF token in the log");
    let actor = rows[0]["actor"].as_str().unwrap();
    assert_eq!(actor.len(), "ui:".len() + 8);
    let session_id = s.cookie.split_once('=').unwrap().1;
    assert_eq!(actor, format!("ui:{}", &session_id[..8]));
    assert!(
        rows[0]["source"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
}

#[tokio::test]
async fn pages_show_spend_budgets_teams_and_filtered_requests() {
    let tail = "policies:\n  - name: cap\n    type: cost-limit\n    config: { limit_usd: 10, period: daily }\n  - name: trial\n    type: cost-limit\n    mode: shadow\n    config: { limit_usd: 0.000001, period: daily }\nteams:\n  - id: t1\n    policies: [cap, trial]\n  - id: t2\n";
    let h = Harness::start(tail).await;
    let (k1, key1) = h.key(json!({"team": "t1", "name": "alpha"})).await;
    let (_, key2) = h
        .key(json!({"team": "t2", "budget_usd": 0.00001, "period": "daily"}))
        .await;
    for i in 0..3 {
        assert_eq!(
            h.chat(&key1, &chat_body(&format!("q{i}"))).await.status(),
            200
        );
    }
    assert_eq!(h.chat(&key2, &chat_body("too dear")).await.status(), 402);
    let mut other = chat_body("other");
    other["model"] = json!("other-model");
    assert_eq!(h.chat(&key1, &other).await.status(), 200);
    h.ledger().await;

    let (s, _) = login(&h.url).await;
    let (_, page) = s.get("/ui").await;
    // The chart has a segment for t1 and none for t2 (it spent nothing).
    assert!(page.contains("<svg class=\"chart\""), "{page}");
    assert!(page.contains("data-team=\"t1\""), "{page}");
    assert!(
        !page.contains("data-team=\"t2\""),
        "t2 spent nothing: {page}"
    );
    // Budgets: the team cap, the shadow policy marked, the key budget.
    assert!(
        page.contains("<b>cap</b>") && page.contains("$10.00"),
        "{page}"
    );
    assert!(
        page.contains("<b>trial</b> <span class=\"badge warn\""),
        "{page}"
    );
    assert!(page.contains("<b>key-budget</b>"), "{page}");
    // Top keys and models.
    assert!(page.contains("alpha (sk-tg-"), "{page}");
    assert!(page.contains("other-model"), "{page}");
    // The rejection with its code, and the shadow policy that would have rejected.
    let rejections = between(&page, "id=\"rejections\"", "</section>");
    assert!(rejections.contains("budget_exceeded"), "{rejections}");
    // ...and the enforcing policy that refused it.
    assert!(rejections.contains("key-budget"), "{rejections}");
    assert!(page.contains("shadow: trial:budget_exceeded"), "{page}");

    let (_, teams) = s.get("/ui/teams").await;
    assert!(teams.contains("data-team=\"t2\""), "{teams}");

    // The request log, filtered.
    let count = |p: &str| p.matches("<tr><td>20").count();
    let (_, all) = s.get("/ui/requests").await;
    assert_eq!(count(&all), 5, "{all}");
    let (_, by_team) = s.get("/ui/requests?team=t2").await;
    assert_eq!(count(&by_team), 1);
    let (_, by_key) = s.get(&format!("/ui/requests?key=sk-tg-{k1}")).await;
    assert_eq!(count(&by_key), 4);
    let (_, by_model) = s.get("/ui/requests?model=other-model").await;
    assert_eq!(count(&by_model), 1);
    let (_, errors) = s.get("/ui/requests?status=error").await;
    assert_eq!(count(&errors), 1);
    let (_, exact) = s.get("/ui/requests?status=402&team=t2").await;
    assert_eq!(count(&exact), 1);
    let (_, ok) = s.get("/ui/requests?status=ok").await;
    assert_eq!(count(&ok), 4);
    let (status, bad) = s.get("/ui/requests?status=teapot").await;
    assert_eq!(status, StatusCode::OK);
    assert!(bad.contains("is not `ok`, `error`"), "{bad}");
    // Hostile filters are data, not markup.
    let (_, hostile) = s.get("/ui/requests?team=%3Cscript%3E").await;
    assert!(!hostile.contains("<script>"), "{hostile}");
}

#[tokio::test]
async fn the_request_log_pages_fifty_rows_at_a_time() {
    let h = Harness::start("").await;
    let (_, key) = h.key(json!({})).await;
    for i in 0..55 {
        assert_eq!(
            h.chat(&key, &chat_body(&format!("p{i}"))).await.status(),
            200
        );
    }
    h.ledger().await;
    let (s, _) = login(&h.url).await;
    let (_, first) = s.get("/ui/requests").await;
    assert_eq!(first.matches("<tr><td>20").count(), 50);
    let before_link = &first[..first.find("\" id=\"older\"").unwrap()];
    let older = before_link
        .rsplit("href=\"")
        .next()
        .unwrap()
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    assert!(older.contains("page=2"), "{older}");
    let (_, second) = s.get(&older).await;
    assert_eq!(second.matches("<tr><td>20").count(), 5);
    assert!(!second.contains("id=\"older\""));
}

#[tokio::test]
async fn with_admin_listen_the_console_is_served_there_only() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let h = Harness::start(&format!("admin_listen: 127.0.0.1:{port}\n")).await;
    let admin = format!("http://{}", h.gw().admin_addr.unwrap());
    let http = client();
    for path in ["/ui", "/ui/login", "/ui/assets/style.css"] {
        let resp = http.get(format!("{}{path}", h.url)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "public {path}");
    }
    let resp = http
        .post(format!("{}/ui/login", h.url))
        .form_body(&[("admin_key", ADMIN_KEY)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = http
        .get(format!("{}/admin/keys", h.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::NOT_FOUND,
        "no admin API in public"
    );

    let (s, _) = login(&admin).await;
    let (status, page) = s.get("/ui").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Spend per team"), "{page}");
    let css = http
        .get(format!("{admin}/ui/assets/style.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), StatusCode::OK);
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    // The admin listener's audit rows carry the peer address too.
    let resp = http
        .post(format!("{admin}/admin/teams"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"id": "side"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let audit: serde_json::Value = http
        .get(format!("{admin}/admin/audit?action=team.create"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit["data"][0]["target"], "team:side");
    assert!(
        audit["data"][0]["source"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
}

#[tokio::test]
async fn hostile_form_fields_cookies_and_ids_change_nothing() {
    let h = Harness::start("").await;
    let (s, _) = login(&h.url).await;
    let csrf = s.csrf().await;
    // Budgets that are not money, and expiries that are not days: explained, never created.
    let huge = "9".repeat(400);
    for (field, value, says) in [
        ("budget_usd", "NaN", "is not a USD amount"),
        ("budget_usd", "-1", "is not a USD amount"),
        ("budget_usd", "1e400", "is not a USD amount"),
        ("budget_usd", "inf", "is not a USD amount"),
        ("budget_usd", huge.as_str(), "is not a USD amount"),
        ("budget_usd", "ten", "is not a USD amount"),
        // Finite, but past what the API accepts as a budget.
        ("budget_usd", "1e12", "must be a USD amount"),
        ("expires_days", "99999", "is not a number of days"),
        ("expires_days", "-1", "is not a number of days"),
    ] {
        let form = [
            ("csrf", csrf.as_str()),
            ("team", "t1"),
            (field, value),
            ("period", "daily"),
        ];
        let (status, page) = s.post("/ui/keys", &form).await;
        assert_eq!(status, StatusCode::OK, "{field}={value}");
        assert!(page.contains(says), "{field}={value}: {page}");
    }
    let (_, keys) = h.admin(Method::GET, "/admin/keys", None).await;
    assert_eq!(keys["data"], json!([]), "no key was created");

    // Rotation grace that is not a number of seconds, or too long.
    let (id, _) = h.key(json!({})).await;
    for grace in ["-5", "1e9", "99999999999999999999999", "31536000"] {
        let (_, page) = s
            .post(
                &format!("/ui/keys/{id}/rotate"),
                &[("csrf", csrf.as_str()), ("grace_seconds", grace)],
            )
            .await;
        assert!(page.contains("grace"), "{grace}: {page}");
        assert!(
            !page.contains("id=\"revealed-key\""),
            "{grace}: rotated anyway"
        );
    }
    // An id that is markup is shown as text, and nothing is revoked.
    let (status, page) = s
        .post(
            "/ui/keys/%3Cscript%3Ealert(1)%3C%2Fscript%3E/revoke",
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("no key with id") && !page.contains("<script>"),
        "{page}"
    );
    let (_, key) = h
        .admin(Method::GET, &format!("/admin/keys/{id}"), None)
        .await;
    assert_eq!(key["status"], "active");

    // A form over the size limit is not read at all: no CSRF token, refused.
    let big = "x".repeat(100 * 1024);
    let (status, _) = s
        .post(
            "/ui/keys",
            &[("csrf", csrf.as_str()), ("team", "t1"), ("name", &big)],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Cookies that are not a session: several, empty, huge, odd bytes.
    let http = client();
    for cookie in [
        "tollgate_session=".to_owned(),
        "a=b; tollgate_session=zz; c=d".to_owned(),
        format!("tollgate_session={}", "f".repeat(8000)),
        "tollgate_session=%00%ff".to_owned(),
        format!(
            "{}; tollgate_session=x",
            s.cookie.replace("tollgate_session", "other")
        ),
    ] {
        let resp = http
            .get(format!("{}/ui/keys", h.url))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{cookie:.60}");
    }
    // The real session alongside other cookies still works.
    let resp = http
        .get(format!("{}/ui/keys", h.url))
        .header(COOKIE, format!("theme=dark; {}; x=y", s.cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_session_ends_eight_hours_after_login() {
    use std::sync::Arc;
    let start = chrono::DateTime::parse_from_rfc3339("2026-12-01T09:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let clock = Arc::new(tollgate::types::ManualClock::new(start));
    let h = Harness::start_with(Default::default(), "", clock.clone()).await;
    let (s, _) = login(&h.url).await;
    clock.advance(chrono::TimeDelta::seconds(8 * 3600 - 1));
    assert_eq!(s.get("/ui").await.0, StatusCode::OK);
    clock.advance(chrono::TimeDelta::seconds(1));
    for page in PAGES {
        assert_eq!(s.get(page).await.0, StatusCode::SEE_OTHER, "{page}");
    }
}
