//! The status page and the JSON API of a real daemon probing the simulators: headless Chromium
//! (the Debian package) renders `/` and a tenant page, and the grid must show each simulated
//! tenant's checks in the right state, with a hostile SMTP reply shown as text, never run.
//! Without Chromium the browser test is skipped, unless `TW_REQUIRE_CHROMIUM` is set (as
//! scripts/test.sh does), in which case it fails.
//!
//! A second test turns on `read_requires_token` and checks every read needs the API token,
//! which never shows up in the logs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tw_sim::smtp::RcptBehaviour;

use crate::support::{eventually, temp_dir, Sims, TestDaemon};

const ADMIN: &str = "admin@contoso.example";
const IT: &str = "it@fabrikam.example";
/// What a hostile MX could answer; the status page must show it as text.
const HOSTILE_REPLY: &str =
    "550 5.1.1 <script>document.title='pwned'</script><img src=x onerror=alert(1)> User unknown";

fn config(sims: &Sims) -> String {
    format!(
        "[schedule]\ninterval = \"10s\"\ntimeout = \"4s\"\n\n{}\n\
         [[tenants]]\nname = \"contoso\"\ndomain = \"contoso.example\"\nwatch = [\"{ADMIN}\"]\n\n\
         [[tenants]]\nname = \"fabrikam\"\ndomain = \"fabrikam.example\"\nwatch = [\"{IT}\"]\n",
        sims.config_sections()
    )
}

fn status_series(check: &str, target: &str, tenant: &str) -> String {
    format!("tenantwatch_check_status{{check=\"{check}\",target=\"{target}\",tenant=\"{tenant}\"}}")
}

/// Every opening `<tag …>` with attributes, as name → value. Values are double-quoted (as
/// the page writes them and Chromium serialises them) and may hold `<` and `>`: Chromium's
/// serialiser escapes only `&` and `"` inside attributes.
fn tags(html: &str, tag: &str) -> Vec<BTreeMap<String, String>> {
    let open = format!("<{tag} ");
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        let mut text = &rest[start + open.len()..];
        let mut attrs = BTreeMap::new();
        loop {
            text = text.trim_start();
            if text.starts_with('>') || text.is_empty() {
                break;
            }
            let name_end = text.find(['=', ' ', '>']).unwrap();
            let name = text[..name_end].to_owned();
            if text[name_end..].starts_with("=\"") {
                let value_start = name_end + 2;
                let close = text[value_start..].find('"').unwrap();
                attrs.insert(
                    name,
                    text[value_start..value_start + close].replace("&amp;", "&"),
                );
                text = &text[value_start + close + 1..];
            } else {
                attrs.insert(name, String::new());
                text = &text[name_end..];
            }
        }
        found.push(attrs);
        rest = text;
    }
    found
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|name| {
        std::process::Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
    })
}

/// The DOM Chromium built from `url`, serialised.
async fn dump_dom(browser: &str, profile: &Path, url: &str) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-extensions",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(["--dump-dom", url])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium did not finish within 90 s")
    .unwrap();
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && dom.contains("</html>"),
        "chromium failed ({}): {}\n{dom}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    dom
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_the_grid_with_each_tenants_states_and_hostile_text_inert() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("TW_REQUIRE_CHROMIUM").is_none(),
            "TW_REQUIRE_CHROMIUM is set but no chromium is installed (apt-get install chromium)"
        );
        eprintln!("skipped: chromium is not installed (scripts/test.sh installs it)");
        return;
    };
    let dir = temp_dir();
    let sims = Sims::start(dir.path(), &["contoso.example", "fabrikam.example"]).await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::Accept);
    sims.smtp
        .set_recipient(IT, RcptBehaviour::Reply(HOSTILE_REPLY.to_owned()));
    let daemon = TestDaemon::spawn(dir.path(), &config(&sims)).await;
    let expected = [
        (status_series("smtp_rcpt", ADMIN, "contoso"), 0.0),
        (status_series("dns", "contoso.example", "contoso"), 0.0),
        (status_series("smtp_rcpt", IT, "fabrikam"), 2.0),
        (status_series("dns", "fabrikam.example", "fabrikam"), 0.0),
    ];
    eventually(Duration::from_secs(20), "every first verdict", || async {
        for (series, want) in &expected {
            if daemon.metric(series).await != Some(*want) {
                return None;
            }
        }
        Some(())
    })
    .await;

    let profile = dir.path().join("chromium-profile");
    let dom = dump_dom(browser, &profile, &format!("http://{}/", daemon.addr)).await;
    let cells: BTreeMap<(String, String), String> = tags(&dom, "td")
        .into_iter()
        .filter(|attrs| attrs.contains_key("data-check"))
        .map(|attrs| {
            (
                (attrs["data-tenant"].clone(), attrs["data-check"].clone()),
                attrs["data-status"].clone(),
            )
        })
        .collect();
    let want: BTreeMap<(String, String), String> = [
        ("contoso", "dns", "ok"),
        ("contoso", "smtp_rcpt", "ok"),
        ("fabrikam", "dns", "ok"),
        ("fabrikam", "smtp_rcpt", "critical"),
    ]
    .into_iter()
    .map(|(t, c, s)| ((t.to_owned(), c.to_owned()), s.to_owned()))
    .collect();
    assert_eq!(cells, want, "{dom}");
    let rows: Vec<(String, String)> = tags(&dom, "tr")
        .into_iter()
        .filter(|attrs| attrs.len() == 2 && attrs.contains_key("data-tenant"))
        .map(|attrs| (attrs["data-tenant"].clone(), attrs["data-status"].clone()))
        .collect();
    assert_eq!(
        rows,
        [
            ("contoso".to_owned(), "ok".to_owned()),
            ("fabrikam".to_owned(), "critical".to_owned())
        ]
    );
    assert!(
        dom.contains("recipient_not_found"),
        "the critical cell names its reason: {dom}"
    );
    // The stylesheet loaded under the CSP: Chromium applied it, so nothing was blocked that
    // the page needs (a blocked sheet leaves the DOM the same, so check the served sheet).
    let (status, css) = daemon.get("/static/tenantwatch.css").await;
    assert_eq!((status, css.contains(".s-critical")), (200, true));

    // The tenant page shows the hostile reply as text: no element came out of it.
    let page = dump_dom(
        browser,
        &profile,
        &format!("http://{}/tenants/fabrikam", daemon.addr),
    )
    .await;
    assert!(!page.contains("<script"), "{page}");
    assert!(!page.contains("<img"), "{page}");
    assert!(
        page.contains(
            "&lt;script&gt;document.title='pwned'&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
        ),
        "{page}"
    );
    assert!(
        page.contains("<title>tenantwatch: fabrikam</title>"),
        "{page}"
    );
    let targets: Vec<(String, String)> = tags(&page, "tr")
        .into_iter()
        .filter(|attrs| attrs.contains_key("data-target"))
        .map(|attrs| (attrs["data-target"].clone(), attrs["data-status"].clone()))
        .collect();
    assert!(
        targets.contains(&(IT.to_owned(), "critical".to_owned())),
        "{targets:?}"
    );
}

/// A GET with an optional `Authorization` header; returns status, raw headers and body.
async fn request(
    addr: SocketAddr,
    path: &str,
    authorization: Option<&str>,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let auth = authorization
        .map(|value| format!("Authorization: {value}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_required_every_read_needs_it_and_it_is_never_logged() {
    const TOKEN: &str = "canary-api-token-61c0e2";
    let dir = temp_dir();
    let sims = Sims::start(dir.path(), &["contoso.example"]).await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::Accept);
    let token_file = dir.path().join("api-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let db_path = dir.path().join("tenantwatch.db");
    let config_path = dir.path().join("tenantwatch.toml");
    std::fs::write(
        &config_path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\napi_token_file = \"{}\"\nread_requires_token = true\n\n[store]\npath = \"{}\"\n\n[schedule]\ninterval = \"10s\"\ntimeout = \"4s\"\n\n{}\n[[tenants]]\nname = \"contoso\"\ndomain = \"contoso.example\"\nwatch = [\"{ADMIN}\"]\n",
            token_file.display(),
            db_path.display(),
            sims.config_sections()
        ),
    )
    .unwrap();
    let args = vec![
        "run".into(),
        "--config".into(),
        config_path.clone().into_os_string(),
    ];
    let mut daemon = TestDaemon::start(args, config_path, db_path).await;
    eventually(Duration::from_secs(20), "admin to be ok", || async {
        let (status, _, body) = request(
            daemon.addr,
            "/api/v1/checks",
            Some(&format!("Bearer {TOKEN}")),
        )
        .await;
        (status == 200 && body.contains(ADMIN)).then_some(())
    })
    .await;

    for path in [
        "/",
        "/tenants/contoso",
        "/api/v1/tenants",
        "/api/v1/observations",
        "/metrics",
    ] {
        let (status, head, body) = request(daemon.addr, path, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{head}"
        );
        assert!(!body.contains(ADMIN), "{path} leaked data");
        let (status, _, _) = request(daemon.addr, path, Some("Bearer wrong-token")).await;
        assert_eq!(status, 401, "{path}");
        let (status, _, _) = request(daemon.addr, path, Some(&format!("Bearer {TOKEN}"))).await;
        assert_eq!(status, 200, "{path}");
    }
    let (status, _, _) = request(daemon.addr, "/healthz", None).await;
    assert_eq!(status, 200);
    let (status, _, body) = request(
        daemon.addr,
        "/api/v1/tenants",
        Some(&format!("Bearer {TOKEN}")),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("\"name\":\"contoso\""), "{body}");

    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(6)).await.success());
    let logs = daemon.logs().join("\n");
    assert!(!logs.contains(TOKEN), "the API token is in the logs");
    let database = std::fs::read(&daemon.db_path).unwrap();
    assert!(!String::from_utf8_lossy(&database).contains(TOKEN));
}
