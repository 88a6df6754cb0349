//! rancher-metadata's JSON, as its `/services` answers in the 2015-12-19 and 2016-07-29 layouts.
//! Unknown fields are ignored; missing ones default, so a partial object still parses.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct MetaService {
    pub name: String,
    pub stack_name: String,
    pub kind: String,
    pub state: String,
    pub system: bool,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<String>,
    pub health_check: Option<MetaHealthCheck>,
    pub containers: Vec<MetaContainerRef>,
}

/// A container inside a service: an object (2016-07-29) or, in some older answers, its name.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum MetaContainerRef {
    Object(MetaContainer),
    Name(String),
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct MetaContainer {
    pub name: String,
    pub primary_ip: String,
    pub state: String,
    pub health_state: String,
    pub service_name: String,
    pub stack_name: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct MetaHealthCheck {
    pub port: Option<u16>,
    pub request_line: Option<String>,
    /// Milliseconds.
    pub interval: Option<u64>,
    /// Milliseconds.
    pub response_timeout: Option<u64>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
    /// Milliseconds.
    pub initializing_timeout: Option<u64>,
    pub strategy: Option<String>,
    pub recreate_on_quorum_strategy_config: Option<QuorumConfig>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct QuorumConfig {
    pub quorum: Option<u32>,
}
