@tool
extends Node
## One upscale job: upload the image, poll until it is finished, download the result to a
## staging file, rename it into the project, then tell the editor's filesystem about it.
##
## New files get update_file() + scan(); a replaced source gets reimport_files(), so its
## .import settings, UID and every reference to it survive. Nothing half-written ever lands
## in res://: the download goes to res://.godot/aat_staging/ (ignored by the importer).

signal changed

const ApiClient := preload("api_client.gd")
const STAGING_DIR := "res://.godot/aat_staging"
const POLL_S := 1.0
const TERMINAL := ["succeeded", "failed", "canceled"]

var source_path := ""
var dest_path := ""
var replace := false
var params := {}
var state := "pending"
var status_text := "Waiting"
var progress := 0.0
var job_id := ""
var page_url := ""  # the job's page in the studio: <server>/jobs/<id>
var api: ApiClient
var _cancel_requested := false


func start() -> void:
	state = "running"
	_update("Uploading", 0.0)
	var body := FileAccess.get_file_as_bytes(source_path)
	if body.is_empty():
		_fail("Cannot read %s: %s" % [source_path, error_string(FileAccess.get_open_error())])
		return
	var args := params.duplicate()
	args["filename"] = source_path.get_file()
	var reply: Dictionary = await api.send("submit", args, body)
	if not reply["ok"]:
		_fail(reply["error"])
		return
	job_id = str(reply["json"].get("id", ""))
	page_url = "%s/jobs/%s" % [api.base_url.rstrip("/"), job_id.uri_encode()]
	print("AI Assets Toolbox: %s is job %s, watch it at %s" % [source_path, job_id, page_url])
	await _poll(reply["json"])


func cancel() -> void:
	_cancel_requested = true
	_update("Canceling", progress)


func _poll(job: Dictionary) -> void:
	var tree: SceneTree = get_tree()
	while str(job.get("status", "")) not in TERMINAL:
		var timer: SceneTreeTimer = tree.create_timer(POLL_S)
		await timer.timeout
		if not is_inside_tree():
			return
		if _cancel_requested:
			await api.send("cancel", {"job_id": job_id})
			_end("canceled", "Canceled")
			return
		var reply: Dictionary = await api.send("job", {"job_id": job_id})
		if not reply["ok"]:
			_fail(reply["error"])
			return
		job = reply["json"]
		_update(
			"%s %d%%" % [job.get("stage", ""), int(float(job.get("progress", 0.0)) * 100)],
			float(job.get("progress", 0.0))
		)
	match str(job["status"]):
		"failed":
			var err: Dictionary = job.get("error", {})
			_fail("Job failed (%s): %s" % [err.get("code", "error"), err.get("message", "")])
		"canceled":
			_end("canceled", "Canceled on the server")
		_:
			await _download()


func _download() -> void:
	var staging_abs := ProjectSettings.globalize_path(STAGING_DIR)
	DirAccess.make_dir_recursive_absolute(staging_abs)
	var part := staging_abs.path_join(job_id + ".part")
	_update("Downloading", 1.0)
	var reply: Dictionary = await api.send("result", {"job_id": job_id}, PackedByteArray(), part)
	if not reply["ok"] or not FileAccess.file_exists(part):
		DirAccess.remove_absolute(part)
		_fail(reply["error"] if reply["error"] != "" else "Download of the result failed")
		return
	var err := DirAccess.rename_absolute(part, ProjectSettings.globalize_path(dest_path))
	if err != OK:
		DirAccess.remove_absolute(part)
		_fail("Cannot move the result to %s: %s" % [dest_path, error_string(err)])
		return
	_import()
	_end("done", "Done: %s" % dest_path.get_file())


func _import() -> void:
	var fs: EditorFileSystem = EditorInterface.get_resource_filesystem()
	if replace:
		fs.reimport_files(PackedStringArray([dest_path]))
	else:
		fs.update_file(dest_path)
		fs.scan()


func _update(text: String, value: float) -> void:
	status_text = text
	progress = clampf(value, 0.0, 1.0)
	changed.emit()


func _fail(message: String) -> void:
	push_warning("AI Assets Toolbox: %s: %s" % [source_path, message])
	_end("error", "Error: " + message)


func _end(final_state: String, text: String) -> void:
	state = final_state
	_update(text, progress)
