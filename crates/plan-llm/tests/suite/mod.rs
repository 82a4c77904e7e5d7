mod adapters;
mod config;
mod fixtures;
mod layers;
mod scripted;
mod structured;
mod support;
