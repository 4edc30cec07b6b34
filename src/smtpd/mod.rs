pub mod checks;
pub mod data;
pub mod names;
pub mod params;
pub mod server;
pub mod session;
pub mod tls;
pub mod users;
