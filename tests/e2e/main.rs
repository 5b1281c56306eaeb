//! End-to-end tests: the real `trellis` binary on free loopback ports,
//! driven by real third-party clients (autobahn-python, Python
//! `websockets` for raw bad input). `scripts/test` installs the Python
//! environment these need.

mod admin;
mod advanced;
mod auth;
mod auth_methods;
mod bad_input;
mod balloon;
mod cli;
mod cluster;
mod components;
mod crossbar_configs;
mod interop;
mod mqtt;
mod node;
mod projects;
mod python_components;
mod rawsocket;
mod security;
mod support;
mod tls;
mod tokens;
mod wamp;
mod web;
