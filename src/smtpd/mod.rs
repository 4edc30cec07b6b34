pub mod data;
pub mod params;
pub mod session;
