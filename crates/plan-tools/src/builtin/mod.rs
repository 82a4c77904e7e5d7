//! The built-in tools: files under a root ([`ListFilesTool`], [`ReadFileTool`]), document
//! search over any search backend ([`SearchDocsTool`]) and programs run in the sandbox
//! ([`RunCodeTool`]).

mod code;
mod fs;
mod search;

pub use code::{CodeLanguage, RunCodeArgs, RunCodeTool};
pub use fs::{FsRoot, ListFilesArgs, ListFilesTool, ReadFileArgs, ReadFileTool};
pub use search::{SearchDocsArgs, SearchDocsTool};
