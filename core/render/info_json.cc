// `info.json`: qemu-img info --backing-chain --output=json.
#include <string>

#include "core/format/driver.h"
#include "core/render/render.h"
#include "core/render/render_util.h"

namespace chainfs::core {

Json InfoJson(const Chain& chain) {
  Json array = Json::MakeArray();
  for (size_t i = 0; i < chain.elements.size(); ++i) {
    const ChainElement& element = chain.elements[i];
    // qemu-img prints nothing for an image it could not open; neither do we
    // (the `info` and `problems` files say why the chain stopped).
    if (!element.meta) continue;
    const ImageMeta& meta = *element.meta;
    // Keys in the order qemu-img 7.2 prints them.
    Json obj = Json::MakeObject();
    if (meta.backing_format) obj.Set("backing-filename-format", *meta.backing_format);
    obj.Set("virtual-size", meta.virtual_size);
    obj.Set("filename", element.path);
    if (meta.cluster_size) obj.Set("cluster-size", *meta.cluster_size);
    obj.Set("format", render_internal::ElementFormat(element));
    // qemu-img adds the allocation of a vmdk's extent files to the
    // descriptor's own (VOL/allocation and volume.xml stay st_blocks * 512).
    if (element.stat) {
      obj.Set("actual-size", QemuActualSize(element.stat->allocation, element.meta.get()));
    }
    if (!meta.format_specific.is_null()) obj.Set("format-specific", meta.format_specific);
    if (meta.backing) {
      obj.Set("full-backing-filename", render_internal::FullBackingFilename(chain, i));
    }
    if (meta.encrypted) obj.Set("encrypted", true);
    if (meta.backing) obj.Set("backing-filename", *meta.backing);
    obj.Set("dirty-flag", meta.dirty);
    array.Push(std::move(obj));
  }
  return array;
}

std::string RenderInfoJson(const Chain& chain) { return InfoJson(chain).Dump(4) + "\n"; }

}  // namespace chainfs::core
