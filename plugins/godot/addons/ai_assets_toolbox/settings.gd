@tool
extends RefCounted
## The plugin's per-user settings, kept in EditorSettings (never in project.godot, which is
## committed): server URL, API token (a password field) and the default job knobs.

const PREFIX := "ai_assets_toolbox/"
const DEFAULTS := {
	"server_url": "http://127.0.0.1:8765",
	"api_token": "",
	"scale": 2.0,
	"strength": 0.35,
	"prompt": "",
	"seam_fix": "none",
	"replace_source": false,
}


## Declare every setting (default value and type) so it shows under Editor Settings.
static func register() -> void:
	var es: EditorSettings = EditorInterface.get_editor_settings()
	for key: String in DEFAULTS:
		var name := PREFIX + key
		if not es.has_setting(name):
			es.set_setting(name, DEFAULTS[key])
		es.set_initial_value(name, DEFAULTS[key], false)
		var info := {"name": name, "type": typeof(DEFAULTS[key])}
		if key == "api_token":
			info["hint"] = PROPERTY_HINT_PASSWORD
		es.add_property_info(info)


static func read(key: String) -> Variant:
	var es: EditorSettings = EditorInterface.get_editor_settings()
	var name := PREFIX + key
	return es.get_setting(name) if es.has_setting(name) else DEFAULTS[key]


static func write(key: String, value: Variant) -> void:
	var es: EditorSettings = EditorInterface.get_editor_settings()
	es.set_setting(PREFIX + key, value)
