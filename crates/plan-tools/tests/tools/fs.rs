//! The file tools stay inside their root.

use plan_tools::builtin::{FsRoot, ListFilesTool, ReadFileTool};
use plan_tools::{ToolContext, ToolError, ToolSet};
use serde_json::json;

struct Fixture {
    _dir: tempfile::TempDir,
    _outside: tempfile::TempDir,
    tools: ToolSet,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("notes/deep")).unwrap();
    std::fs::write(root.join("a.txt"), "one\ntwo\nthree\nfour\n").unwrap();
    std::fs::write(root.join("notes/b.md"), "# B\n").unwrap();
    std::fs::write(root.join("notes/deep/c.md"), "c").unwrap();
    std::fs::write(root.join(".secret"), "hidden").unwrap();
    std::fs::write(dir.path().join("sibling.txt"), "outside the root").unwrap();
    std::fs::write(outside.path().join("passwd"), "outside").unwrap();
    std::os::unix::fs::symlink(outside.path().join("passwd"), root.join("escape.txt")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("escape_dir")).unwrap();
    std::os::unix::fs::symlink(root.join("a.txt"), root.join("inside_link.txt")).unwrap();
    let fs_root = FsRoot::new(&root).unwrap();
    let tools = ToolSet::new()
        .with(ReadFileTool::new(fs_root.clone()))
        .with(ListFilesTool::new(fs_root));
    Fixture {
        _dir: dir,
        _outside: outside,
        tools,
    }
}

async fn call(f: &Fixture, tool: &str, args: serde_json::Value) -> Result<String, ToolError> {
    f.tools
        .call(tool, args, &ToolContext::default())
        .await
        .map(|o| o.to_text())
}

#[tokio::test]
async fn reads_numbered_lines_with_paging() {
    let f = fixture();
    assert_eq!(
        call(&f, "read_file", json!({"path": "a.txt"}))
            .await
            .unwrap(),
        "1: one\n2: two\n3: three\n4: four\n"
    );
    assert_eq!(
        call(
            &f,
            "read_file",
            json!({"path": "./a.txt", "start_line": 2, "max_lines": 2})
        )
        .await
        .unwrap(),
        "2: two\n3: three\n[lines 2-3 of 4; call again with start_line=4 for more]\n"
    );
    assert_eq!(
        call(
            &f,
            "read_file",
            json!({"path": "inside_link.txt", "max_lines": 1})
        )
        .await
        .unwrap()
        .lines()
        .next()
        .unwrap(),
        "1: one",
        "a symlink that stays inside the root is fine"
    );
    let err = call(&f, "read_file", json!({"path": "notes"}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is a folder"), "{err}");
    let err = call(&f, "read_file", json!({"path": "missing.md"}))
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn nothing_outside_the_root_is_reachable() {
    let f = fixture();
    for path in [
        "../sibling.txt",
        "notes/../../sibling.txt",
        "/etc/passwd",
        "escape.txt",
        "escape_dir/passwd",
    ] {
        let err = call(&f, "read_file", json!({"path": path}))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ToolError::PathOutsideRoot { .. }),
            "{path}: {err:?}"
        );
        assert!(err.to_string().contains("outside the allowed folder"));
    }
    let err = call(&f, "list_files", json!({"path": ".."}))
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::PathOutsideRoot { .. }), "{err:?}");
    let err = call(&f, "list_files", json!({"path": "escape_dir"}))
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::PathOutsideRoot { .. }), "{err:?}");
}

#[tokio::test]
async fn lists_folders_to_a_depth() {
    let f = fixture();
    let top = call(&f, "list_files", json!({})).await.unwrap();
    let names: Vec<&str> = top.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        names,
        vec![
            "a.txt",
            "escape.txt",
            "escape_dir",
            "inside_link.txt",
            "notes/"
        ],
        "{top}"
    );
    assert!(top.contains("a.txt (19 bytes)"));
    let deep = call(&f, "list_files", json!({"path": "notes", "depth": 3}))
        .await
        .unwrap();
    assert_eq!(
        deep,
        "notes/b.md (4 bytes)\nnotes/deep/\nnotes/deep/c.md (1 bytes)"
    );
    let err = call(&f, "list_files", json!({"depth": "deep"}))
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::InvalidArguments { .. }));
}
