//! Integration tests that run the `cairn` binary as a user would, against
//! repositories in temporary directories.

mod harness;
mod pg;

mod basics;
mod cache;
mod crash;
mod damage;
mod faults;
mod keys;
mod operations;
mod operator;
mod password;
mod pg_server;
mod postgres;
mod producer;
mod prune;
mod retention;
mod tamper;
