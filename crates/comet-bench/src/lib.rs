//! Load generation for `comet bench`: scenarios that drive a push server
//! over real HTTP, loopback only, each bounded in time, and a report of
//! figures (rates and latency percentiles), never a pass/fail verdict.
//!
//! The client side is deliberately lean (`http`: a bare HTTP/1.1 client on
//! a `TcpStream`) so that, on a small machine, the figures describe the
//! server rather than the load generator.

pub mod http;
pub mod publish;
mod report;

pub use report::Latencies;
