//! Python bindings (feature `python`): thin wrappers that convert at the edge and call the
//! pure core. Batch calls copy their input once, then run with the GIL released.

mod convert;
mod deck;
mod routing;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<deck::Rate>()?;
    m.add_class::<deck::RateDeck>()?;
    m.add_class::<deck::RateBatch>()?;
    m.add_class::<routing::RouteTable>()?;
    m.add_class::<routing::RouteResult>()?;
    m.add_class::<routing::Candidate>()?;
    m.add_class::<routing::Rejection>()?;
    Ok(())
}
