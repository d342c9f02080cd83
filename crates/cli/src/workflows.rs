//! `giamsat workflow ...`: check, list and draw workflow definitions, and find them on disk.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use giamsat_engine::{Bundle, Workflow, load};

use crate::output;

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Validate definitions (a workflow folder, its workflow.yaml, or a folder of workflows);
    /// exit 1 with every problem listed
    Check(CheckArgs),
    /// List the workflows in the workflows folder
    List,
    /// Draw a workflow's stages and the commands that move between them
    Graph(GraphArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Folder or file to check [default: the workflows folder]
    path: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Workflow name
    name: String,
    #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
    format: GraphFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GraphFormat {
    Mermaid,
    Dot,
}

/// Reads a workflow folder's definition and the schema files it names.
pub fn read_bundle(dir: &Path) -> Result<Bundle> {
    Ok(giamsat_cases::read_workflow_dir(dir)?)
}

/// Workflow folders under `path`: the folder itself when it holds a workflow.yaml, else its
/// subfolders that do.
pub fn find(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.parent().unwrap_or(Path::new(".")).to_path_buf()]);
    }
    if path.join("workflow.yaml").is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path)
        .with_context(|| format!("cannot read workflows folder {}", path.display()))?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("workflow.yaml").is_file())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Loads the workflow called `name` from the workflows folder.
pub fn by_name(root: &Path, name: &str) -> Result<Workflow> {
    for dir in find(root)? {
        let bundle = read_bundle(&dir)?;
        if let Ok(workflow) = load(bundle)
            && workflow.name() == name
        {
            return Ok(workflow);
        }
    }
    bail!(
        "no valid workflow named {name:?} in {} (see `giamsat workflow check`)",
        root.display()
    )
}

pub fn run(root: &Path, command: WorkflowCommand) -> Result<ExitCode> {
    match command {
        WorkflowCommand::Check(args) => check(args.path.as_deref().unwrap_or(root)),
        WorkflowCommand::List => list(root),
        WorkflowCommand::Graph(args) => graph(root, &args),
    }
}

fn check(path: &Path) -> Result<ExitCode> {
    let dirs = find(path)?;
    if dirs.is_empty() {
        bail!("no workflow.yaml found in {}", path.display());
    }
    let mut failed = false;
    for dir in dirs {
        match load(read_bundle(&dir)?) {
            Ok(w) => {
                let mut problems = giamsat_documents::check_templates(&w);
                problems.extend(giamsat_notifications::check_templates(&w));
                if problems.is_empty() {
                    output::line(&format!(
                        "ok {} version {} ({} stages, {} commands, {} documents) {}",
                        w.name(),
                        w.version(),
                        w.definition.stages.len(),
                        w.definition.commands.len(),
                        w.definition.documents.len(),
                        &w.hash[..12]
                    ))?;
                } else {
                    failed = true;
                    for p in problems {
                        eprintln!("{}/{p}", dir.display());
                    }
                }
            }
            Err(problems) => {
                failed = true;
                for p in &problems.0 {
                    eprintln!("{p}");
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn list(root: &Path) -> Result<ExitCode> {
    for dir in find(root)? {
        match load(read_bundle(&dir)?) {
            Ok(w) => output::line(&format!(
                "{}\t{}\t{}\t{}",
                w.name(),
                w.version(),
                &w.hash[..12],
                w.definition.label
            ))?,
            Err(_) => output::line(&format!(
                "{}\tinvalid (run `giamsat workflow check`)",
                dir.display()
            ))?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn graph(root: &Path, args: &GraphArgs) -> Result<ExitCode> {
    let w = by_name(root, &args.name)?;
    let def = &w.definition;
    // Edges: a command that moves the case from each stage it runs in to its effect's stage,
    // and the automatic transitions.
    let mut edges: Vec<(String, String, String)> = Vec::new();
    for c in &def.commands {
        for e in &c.effects {
            if let Some(to) = &e.stage {
                for from in &c.stages {
                    if from.value != to.value {
                        edges.push((from.value.clone(), to.value.clone(), c.id.value.clone()));
                    }
                }
            }
        }
    }
    for t in &def.transitions {
        edges.push((
            t.from.value.clone(),
            t.to.value.clone(),
            "(tự động)".to_owned(),
        ));
    }
    edges.dedup();
    let mut out = String::new();
    match args.format {
        GraphFormat::Mermaid => {
            out.push_str("stateDiagram-v2\n");
            out.push_str(&format!("    [*] --> {}\n", def.start.stage.value));
            for s in &def.stages {
                out.push_str(&format!("    {}: {}\n", s.id.value, s.label));
            }
            for (from, to, label) in &edges {
                out.push_str(&format!("    {from} --> {to}: {label}\n"));
            }
        }
        GraphFormat::Dot => {
            out.push_str(&format!(
                "digraph \"{}\" {{\n    rankdir=LR;\n",
                def.name.value
            ));
            for s in &def.stages {
                out.push_str(&format!(
                    "    \"{}\" [label=\"{}\\n{}\"];\n",
                    s.id.value,
                    s.id.value,
                    s.label.replace('"', "\\\"")
                ));
            }
            for (from, to, label) in &edges {
                out.push_str(&format!(
                    "    \"{from}\" -> \"{to}\" [label=\"{label}\"];\n"
                ));
            }
            out.push_str("}\n");
        }
    }
    output::line(out.trim_end())?;
    Ok(ExitCode::SUCCESS)
}
