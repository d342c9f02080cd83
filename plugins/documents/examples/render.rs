//! Renders one template with a context file, for template authors:
//! `cargo run -p giamsat-documents --example render -- TEMPLATE CONTEXT.json [PARTIALS_DIR] [md|html|markup]`.
//! Every `*.hbs` file in PARTIALS_DIR is a partial named by its file stem.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [template, context, rest @ ..] = args.as_slice() else {
        return Err("usage: render TEMPLATE CONTEXT.json [PARTIALS_DIR] [md|html|markup]".into());
    };
    let mut templates = giamsat_documents::Templates::new();
    if let Some(dir) = rest.first() {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "hbs") {
                let name = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default();
                templates.add_partial(name, &std::fs::read_to_string(&path)?)?;
            }
        }
    }
    templates.add(template, &std::fs::read_to_string(template)?)?;
    let data: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(context)?)?;
    let text = templates.render(template, &data)?;
    let format = rest.get(1).map_or("md", String::as_str);
    if format == "markup" {
        print!("{text}");
        return Ok(());
    }
    let doc = giamsat_documents::markup::parse(&text).map_err(|e| format!("{template}: {e}"))?;
    match format {
        "html" => print!("{}", giamsat_documents::html::to_html(&doc, "document")),
        _ => println!("{}", giamsat_documents::markup::to_markdown(&doc)),
    }
    Ok(())
}
