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

/// The allocator of every program built on this crate (`wangban`, `wangban-bench`, the tests):
/// jemalloc instead of glibc's malloc: a worker's allocations are small and short-lived beside
/// a few long-lived ones, and glibc's per-thread arenas kept the freed memory between them
/// (notify: 14.4 MiB held for 3.1 MiB in use). Measured in docs/performance.md, "jemalloc".
/// `_RJEM_MALLOC_CONF` tunes it (docs/deploy.md, "Memory").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
