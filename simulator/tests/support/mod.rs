//! Run the simulator's HTTP server in-process on 127.0.0.1.

#![allow(dead_code)]

use std::sync::Arc;

use chrono::NaiveDate;
use serde_json::Value;
use skolflode_simulator::server::{self, AppState};
use skolflode_simulator::sim::Simulation;
use skolflode_simulator::SimConfig;

pub struct Running {
    pub url: String,
    pub state: Arc<AppState>,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("date")
}

pub async fn start(config: SimConfig, until: NaiveDate) -> Running {
    let mut sim = Simulation::new(config, None).expect("simulation");
    sim.advance_to(until).expect("advance");
    let state = AppState::new(sim);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve(listener, Arc::clone(&state), async move {
        let _ = stopped.await;
    }));
    Running {
        url,
        state,
        http: reqwest::Client::new(),
        stop: Some(stop),
    }
}

impl Running {
    pub async fn token(&self) -> String {
        let response = self
            .http
            .post(format!("{}/oauth2/token", self.url))
            .body(
                "grant_type=client_credentials&client_id=skolflode&client_secret=simulated-secret",
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .send()
            .await
            .expect("token request");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("json");
        body["access_token"].as_str().expect("token").to_owned()
    }

    pub async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// Every item of an endpoint, following page tokens with `limit`
    /// alone, as the standard asks; calendar events in [`ALL_TIME`] unless
    /// `extra` gives a window.
    pub async fn all(&self, token: &str, endpoint: &str, extra: &str) -> Vec<Value> {
        self.pages(token, endpoint, extra, false).await
    }

    /// [`Self::all`] for a vendor whose page tokens need the filters
    /// repeated (`filters_with_page_token`).
    pub async fn all_repeating(&self, token: &str, endpoint: &str, extra: &str) -> Vec<Value> {
        self.pages(token, endpoint, extra, true).await
    }

    async fn pages(&self, token: &str, endpoint: &str, extra: &str, repeat: bool) -> Vec<Value> {
        let extra = if endpoint == "calendarEvents" && !extra.contains("startTime.") {
            format!("{extra}{ALL_TIME}")
        } else {
            extra.to_owned()
        };
        let mut items = Vec::new();
        let mut path = format!("/ss12000/v2/{endpoint}?limit=97{extra}");
        loop {
            let response = self.get(token, &path).await;
            assert_eq!(response.status(), 200, "{path}");
            let page: Value = response.json().await.expect("json page");
            items.extend(page["data"].as_array().expect("data").iter().cloned());
            let filters = if repeat { extra.as_str() } else { "" };
            match page["pageToken"].as_str() {
                Some(next) => {
                    path = format!("/ss12000/v2/{endpoint}?limit=97&pageToken={next}{filters}")
                }
                None => return items,
            }
        }
    }
}

/// A `startTime` window for `calendarEvents` that holds every lesson.
pub const ALL_TIME: &str =
    "&startTime.onOrAfter=2000-01-01T00:00:00Z&startTime.onOrBefore=2100-01-01T00:00:00Z";

/// [`ALL_TIME`] for `calendarEvents`, nothing for the other endpoints.
pub fn window(endpoint: &str) -> &'static str {
    if endpoint == "calendarEvents" {
        ALL_TIME
    } else {
        ""
    }
}
