//! The SS 12000 OpenAPI specification, read from its YAML files: where it
//! is, and the query parameters it defines for each `GET` endpoint. The
//! simulator's tests hold its request table to it, and the pipeline's
//! tests hold the requests the producer made to it.
//!
//! The specification is not part of the repository: it is the shared
//! reference material beside the checkout (`../shared/reference/…`), or
//! under `SKOLFLODE_SHARED_DIR`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Why the specification could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{file}: {cause}")]
    Read { file: String, cause: String },
    #[error("{reference} from {file}: no such node")]
    Reference { file: String, reference: String },
    #[error("/{0} is not in the specification")]
    Endpoint(String),
    #[error("{endpoint}: a parameter without a name, or given twice: {name}")]
    Parameter { endpoint: String, name: String },
}

/// The specification's directory, looked for beside the checkout holding
/// `start` (any directory inside it), or under `SKOLFLODE_SHARED_DIR`.
pub fn dir(start: &Path) -> Option<PathBuf> {
    let relative = "reference/ss12000-v2.0-draft";
    if let Ok(shared) = std::env::var("SKOLFLODE_SHARED_DIR") {
        let dir = Path::new(&shared).join(relative);
        return dir.is_dir().then_some(dir);
    }
    start
        .ancestors()
        .skip(1)
        .map(|a| a.join("shared").join(relative))
        .find(|d| d.is_dir())
}

/// A YAML file of the specification, as written.
pub fn raw(dir: &Path, file: &str) -> Result<Value, SpecError> {
    let read = |cause: String| SpecError::Read {
        file: file.to_owned(),
        cause,
    };
    let text = std::fs::read_to_string(dir.join(file)).map_err(|e| read(e.to_string()))?;
    serde_norway::from_str(&text).map_err(|e| read(e.to_string()))
}

/// Follow a `$ref` (`file#/pointer` or `#/pointer`) from `file`, relative
/// to `file`'s directory: the file it lands in, and the node.
pub fn resolve(dir: &Path, file: &str, reference: &str) -> Result<(String, Value), SpecError> {
    let (target, pointer) = reference.split_once('#').unwrap_or((reference, ""));
    let target = if target.is_empty() {
        file.to_owned()
    } else {
        let base = Path::new(file).parent().unwrap_or(Path::new(""));
        base.join(target).to_string_lossy().into_owned()
    };
    let value = raw(dir, &target)?
        .pointer(pointer)
        .cloned()
        .ok_or_else(|| SpecError::Reference {
            file: file.to_owned(),
            reference: reference.to_owned(),
        })?;
    Ok((target, value))
}

/// The query parameters of `GET /{endpoint}`: name → whether required.
pub fn query_parameters(dir: &Path, endpoint: &str) -> Result<HashMap<String, bool>, SpecError> {
    let openapi = raw(dir, "openapi.yaml")?;
    let path_ref = openapi["paths"][format!("/{endpoint}")]["$ref"]
        .as_str()
        .ok_or_else(|| SpecError::Endpoint(endpoint.to_owned()))?;
    let (file, path) = resolve(dir, "openapi.yaml", path_ref)?;
    let mut out = HashMap::new();
    for parameter in path["get"]["parameters"].as_array().into_iter().flatten() {
        let parameter = match parameter["$ref"].as_str() {
            Some(reference) => resolve(dir, &file, reference)?.1,
            None => parameter.clone(),
        };
        if parameter["in"] != "query" {
            continue;
        }
        let name = parameter["name"].as_str().unwrap_or_default().to_owned();
        let required = parameter["required"].as_bool().unwrap_or(false);
        if name.is_empty() || out.insert(name.clone(), required).is_some() {
            return Err(SpecError::Parameter {
                endpoint: endpoint.to_owned(),
                name,
            });
        }
    }
    Ok(out)
}
