@tool
extends EditorContextMenuPlugin
## FileSystem dock context menu: "Upscale with AI Assets Toolbox" on image files.

signal upscale_requested(paths: PackedStringArray)

const ITEM_NAME := "Upscale with AI Assets Toolbox"
const IMAGE_EXTENSIONS := ["png", "jpg", "jpeg", "webp", "tga", "bmp"]


func _popup_menu(paths: PackedStringArray) -> void:
	if not image_paths(paths).is_empty():
		add_context_menu_item(ITEM_NAME, _on_upscale)


## The FileSystem slot passes the selected paths (a PackedStringArray in 4.4, an Array in
## some builds), so the argument stays a Variant and is converted.
func _on_upscale(selected: Variant) -> void:
	upscale_requested.emit(image_paths(PackedStringArray(selected)))


static func image_paths(paths: PackedStringArray) -> PackedStringArray:
	var out := PackedStringArray()
	for path: String in paths:
		if path.get_extension().to_lower() in IMAGE_EXTENSIONS:
			out.append(path)
	return out
