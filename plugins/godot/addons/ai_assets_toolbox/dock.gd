@tool
extends VBoxContainer
## The "AI Upscale" dock: settings (stored in EditorSettings) and the list of jobs.

signal upscale_selected

const Settings := preload("settings.gd")
const Job := preload("job.gd")
const SEAM_FIX := ["none", "band", "offset"]

var _url := LineEdit.new()
var _token := LineEdit.new()
var _scale := SpinBox.new()
var _strength := SpinBox.new()
var _prompt := LineEdit.new()
var _seam_fix := OptionButton.new()
var _replace := CheckBox.new()
var _jobs_box := VBoxContainer.new()


func _ready() -> void:
	_add_row("Server URL", _url)
	_token.secret = true
	_add_row("API token", _token)
	_scale.min_value = 1.0
	_scale.max_value = 8.0
	_scale.step = 0.5
	_add_row("Scale", _scale)
	_strength.min_value = 0.0
	_strength.max_value = 1.0
	_strength.step = 0.05
	_add_row("Strength", _strength)
	_add_row("Prompt", _prompt)
	for mode: String in SEAM_FIX:
		_seam_fix.add_item(mode)
	_add_row("Seam fix", _seam_fix)
	_replace.text = "Replace the source (reimport)"
	add_child(_replace)
	var button := Button.new()
	button.text = "Upscale selected files"
	button.pressed.connect(func() -> void: upscale_selected.emit())
	add_child(button)
	add_child(_jobs_box)
	_load_settings()
	_connect_settings()


func _add_row(label_text: String, field: Control) -> void:
	var row := HBoxContainer.new()
	var label := Label.new()
	label.text = label_text
	label.custom_minimum_size = Vector2(90, 0)
	field.size_flags_horizontal = Control.SIZE_EXPAND_FILL
	row.add_child(label)
	row.add_child(field)
	add_child(row)


func _load_settings() -> void:
	_url.text = str(Settings.read("server_url"))
	_token.text = str(Settings.read("api_token"))
	_scale.value = float(Settings.read("scale"))
	_strength.value = float(Settings.read("strength"))
	_prompt.text = str(Settings.read("prompt"))
	_seam_fix.select(maxi(0, SEAM_FIX.find(str(Settings.read("seam_fix")))))
	_replace.button_pressed = bool(Settings.read("replace_source"))


func _connect_settings() -> void:
	_url.text_changed.connect(func(text: String) -> void: Settings.write("server_url", text))
	_token.text_changed.connect(func(text: String) -> void: Settings.write("api_token", text))
	_scale.value_changed.connect(func(value: float) -> void: Settings.write("scale", value))
	_strength.value_changed.connect(func(value: float) -> void: Settings.write("strength", value))
	_prompt.text_changed.connect(func(text: String) -> void: Settings.write("prompt", text))
	_seam_fix.item_selected.connect(
		func(index: int) -> void: Settings.write("seam_fix", SEAM_FIX[index])
	)
	_replace.toggled.connect(func(on: bool) -> void: Settings.write("replace_source", on))


## Add a row (label, progress bar, cancel button) that follows `job` until it ends.
func add_job(job: Job) -> void:
	var row := HBoxContainer.new()
	var label := Label.new()
	label.size_flags_horizontal = Control.SIZE_EXPAND_FILL
	label.clip_text = true
	var bar := ProgressBar.new()
	bar.custom_minimum_size = Vector2(80, 0)
	bar.max_value = 1.0
	bar.step = 0.01
	var cancel := Button.new()
	cancel.text = "Cancel"
	cancel.pressed.connect(job.cancel)
	row.add_child(label)
	row.add_child(bar)
	row.add_child(cancel)
	_jobs_box.add_child(row)
	var refresh := func() -> void:
		label.text = "%s: %s" % [job.source_path.get_file(), job.status_text]
		label.tooltip_text = job.status_text
		bar.value = job.progress
		cancel.disabled = job.state != "running"
	job.changed.connect(refresh)
	refresh.call()
