"""A procedural narrated-video corpus for the CPU demo and tests, plus a labelled downstream set.

  events     the vocabulary of a scene (colours, shapes, event types), Event, the window grid of a video,
             the draw of a chain's event types
  narration  what a video says: templates, keywords, fillers and noise words; Cue, narrate, to_vtt
  scene      ground truth of a corpus video (sample_video) or a downstream clip (sample_clip): objects,
             backgrounds, SyntheticError; the frames (render, render_clip) and the video file (encode)
  corpus     the writers: make_corpus, make_downstream, make_order_downstream (a chunked pool of spawned
             workers), generation_speed

Each module imports only from those above it. Callers import from this package, which re-exports the public
names below; the procedural stream (:mod:`tvts.data.stream`) renders clips from it in loader workers.
"""
from tvts.data.synthetic.corpus import (ORDER_CLASSES, ORDER_PAIRS, generation_speed, make_corpus, make_downstream,
                                        make_order_downstream, order_class)
from tvts.data.synthetic.events import (COLOURS, EVENT_TYPES, SHAPES, Event, event_windows, sample_event_types,
                                        video_duration)
from tvts.data.synthetic.narration import FILLERS, KEYWORDS, TEMPLATES, Cue, to_vtt
from tvts.data.synthetic.scene import (DOWNSTREAM_CLASSES, DownstreamClip, SyntheticError, SyntheticVideo, encode,
                                       render, render_clip, render_tracks, sample_clip, sample_video)

__all__ = [
    "COLOURS", "EVENT_TYPES", "SHAPES", "Event", "event_windows", "sample_event_types", "video_duration",
    "FILLERS", "KEYWORDS", "TEMPLATES", "Cue", "to_vtt",
    "DOWNSTREAM_CLASSES", "DownstreamClip", "SyntheticError", "SyntheticVideo", "encode", "render", "render_clip",
    "render_tracks", "sample_clip", "sample_video",
    "ORDER_CLASSES", "ORDER_PAIRS", "generation_speed", "make_corpus", "make_downstream", "make_order_downstream",
    "order_class",
]
