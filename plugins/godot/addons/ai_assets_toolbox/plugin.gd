@tool
extends EditorPlugin
## Entry point: registers the settings, the dock and the FileSystem context menu, and runs
## upscale jobs. _exit_tree() cancels every HTTP request so the editor never hangs on quit.

const Settings := preload("settings.gd")
const ApiClient := preload("api_client.gd")
const Job := preload("job.gd")
const ContextMenu := preload("context_menu.gd")
const Dock := preload("dock.gd")

var _api: ApiClient
var _dock: Dock
var _menu: ContextMenu
var _jobs: Array[Job] = []


func _enter_tree() -> void:
	Settings.register()
	_api = ApiClient.new()
	add_child(_api)
	_dock = Dock.new()
	_dock.name = "AI Upscale"  # the dock tab's title
	_dock.upscale_selected.connect(_on_upscale_selected)
	add_control_to_dock(DOCK_SLOT_RIGHT_UL, _dock)
	_menu = ContextMenu.new()
	_menu.upscale_requested.connect(upscale)
	add_context_menu_plugin(EditorContextMenuPlugin.CONTEXT_SLOT_FILESYSTEM, _menu)


func _exit_tree() -> void:
	_api.cancel_all()  # no request may outlive the plugin (the editor would hang on quit)
	for job in _jobs:
		job.queue_free()  # jobs still running finish on the server; nothing lands half-written
	remove_context_menu_plugin(_menu)
	remove_control_from_docks(_dock)
	_dock.queue_free()
	_api.queue_free()
	_jobs.clear()


func _on_upscale_selected() -> void:
	upscale(ContextMenu.image_paths(EditorInterface.get_selected_paths()))


## Start one job per image path (res://...), with the dock's current settings.
func upscale(paths: PackedStringArray) -> void:
	if paths.is_empty():
		push_warning("AI Assets Toolbox: select one or more image files first")
		return
	_api.base_url = str(Settings.read("server_url"))
	_api.token = str(Settings.read("api_token"))
	for path in paths:
		var job := Job.new()
		job.api = _api
		job.source_path = path
		var ext := path.get_extension().to_lower()
		job.replace = bool(Settings.read("replace_source")) and ext in ApiClient.OUTPUT_FORMATS
		job.params = {
			"scale": snappedf(float(Settings.read("scale")), 0.01),
			"strength": snappedf(float(Settings.read("strength")), 0.01),
			"seam_fix": str(Settings.read("seam_fix")),
			"prompt": str(Settings.read("prompt")),
		}
		job.dest_path = path if job.replace else result_path(path, job.params["scale"])
		add_child(job)
		_jobs.append(job)
		_dock.add_job(job)
		job.start()


## `<dir>/<stem>_x<scale>.<ext>` beside the source, with _1, _2... when the name is taken
## on disk or by a running job.
func result_path(source: String, scale: float) -> String:
	var stem := "%s_x%s" % [source.get_basename(), str(scale).trim_suffix(".0")]
	var ext := source.get_extension()
	if ext.to_lower() not in ApiClient.OUTPUT_FORMATS:
		ext = "png"  # the server answers PNG for formats it cannot write
	var candidate := "%s.%s" % [stem, ext]
	var n := 0
	while FileAccess.file_exists(candidate) or _taken(candidate):
		n += 1
		candidate = "%s_%d.%s" % [stem, n, ext]
	return candidate


func _taken(path: String) -> bool:
	for job in _jobs:
		if job.state == "running" and job.dest_path == path:
			return true
	return false
