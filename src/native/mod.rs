//! The desktop edge: device choice, file output, the loss chart and the trainer.

pub mod allocator;
pub mod device;
pub mod io;
pub mod plot;
pub mod threads;
pub mod train;
