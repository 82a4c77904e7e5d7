mod adapters;
mod config;
mod fixtures;
mod flavours;
mod layers;
mod scripted;
mod structured;
mod support;
