//! The wiring of wangban: configuration, the pipeline (store + bus + the five workers with their
//! parties), and the commands the binary offers. Only this crate knows every concrete piece.

pub mod check;
pub mod command;
pub mod demo;
pub mod executors;
pub mod images;
pub mod otlp;
pub mod parties;
pub mod pipeline;
pub mod processes;
pub mod progress;
pub mod retention;
pub mod serve;
pub mod settings;
pub mod show;
pub mod verify;
