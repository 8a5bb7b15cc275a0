"""astrodask: survey mosaics to source catalogs with deep learning on Dask.

The public API lives here. Names are imported lazily so that
``import astrodask`` stays fast and never pulls in TensorFlow (or dask-cuda)
until a function that needs it is called.
"""

from importlib import import_module

from ._version import __version__  # noqa: F401 (the package version)

# public name -> "module:attribute"
_API = {
    "AstrodaskError": "astrodask.errors:AstrodaskError",
    "InputError": "astrodask.errors:InputError",
    "StoreError": "astrodask.errors:StoreError",
    "ingest": "astrodask.ingestion:ingest",
    "open_mosaic": "astrodask.mosaic:open_mosaic",
    "measure_psf": "astrodask.psf:measure_psf",
    "BandPSF": "astrodask.psf:BandPSF",
    "parse_psf_fwhm": "astrodask.psf:parse_psf_fwhm",
    "parse_band_values": "astrodask.band_values:parse_band_values",
    "RescaledImage": "astrodask.rescale:RescaledImage",
    "BackgroundSubtracted": "astrodask.background:BackgroundSubtracted",
    "Mosaic": "astrodask.mosaic:Mosaic",
    "TileGrid": "astrodask.mosaic:TileGrid",
    "run": "astrodask.engine.run:run",
    "resolve_config": "astrodask.engine.run:resolve_config",
    "RunSummary": "astrodask.engine.run:RunSummary",
    "merge": "astrodask.merging.run:merge",
    "MergeOptions": "astrodask.merging.run:MergeOptions",
    "MergeSummary": "astrodask.merging.run:MergeSummary",
    "residual_pass": "astrodask.residual_detection:residual_pass",
    "ResidualOptions": "astrodask.residual_detection:ResidualOptions",
    "ResidualSummary": "astrodask.residual_detection:ResidualSummary",
    "read_catalog": "astrodask.outputs.catalog:read_catalog",
    "kron_photometry": "astrodask.kron:kron_photometry",
    "write_catalog_fits": "astrodask.outputs.catalog_fits:write_catalog_fits",
    "RunConfig": "astrodask.config:RunConfig",
    "load_config": "astrodask.config:load_config",
    "simulate": "astrodask.simulation:simulate",
    "simulate_field": "astrodask.simulation:simulate_field",
    "simulate_fields": "astrodask.simulation:simulate_fields",
    "SimulatedField": "astrodask.simulation:SimulatedField",
    "read_object_masks": "astrodask.simulation:read_object_masks",
    "build_unet": "astrodask.models.unet:build_unet",
    "load_unet": "astrodask.models.unet:load_unet",
    "model_card": "astrodask.models.card:model_card",
    "configure_framework": "astrodask.framework:configure_framework",
    "import_morpheus": "astrodask.models.morpheus_weights:import_morpheus",
    "classify_tile": "astrodask.morphology.windows:classify_tile",
    "classify_image": "astrodask.morphology.windows:classify_image",
    "segment": "astrodask.morphology.segmentation:segment",
    "deblend": "astrodask.morphology.deblend:deblend",
    "object_morphology": "astrodask.morphology.catalog:object_morphology",
    "colour_image": "astrodask.morphology.colour:colour_image",
    "write_colour_png": "astrodask.morphology.colour:write_colour_png",
    "train_unet": "astrodask.train.unet:train_unet",
    "MaskRCNNConfig": "astrodask.models.maskrcnn:MaskRCNNConfig",
    "build_maskrcnn": "astrodask.models.maskrcnn.model:build_maskrcnn",
    "load_maskrcnn": "astrodask.models.maskrcnn.model:load_maskrcnn",
    "detect_sources": "astrodask.models.maskrcnn.model:detect",
    "band_statistics": "astrodask.models.maskrcnn.normalise:band_statistics",
    "normalise_bands": "astrodask.models.maskrcnn.normalise:normalise_bands",
    "build_centre_net": "astrodask.models.centres:build_centre_net",
    "centre_heatmap": "astrodask.models.centres:centre_heatmap",
    "widen_centre_net": "astrodask.models.centres:widen_centre_net",
    "find_centres": "astrodask.models.centres:find_centres",
    "centres_from_card": "astrodask.models.centres:centres_from_card",
    "train_centres": "astrodask.train.centres:train_centres",
    "attach_centres": "astrodask.train.centres:attach_centres",
    "train_maskrcnn": "astrodask.train.maskrcnn:train_maskrcnn",
    "TrainSettings": "astrodask.train.maskrcnn:TrainSettings",
    "train_maskrcnn_on_simulations": "astrodask.train.maskrcnn:train_from_simulations",
    "evaluate_maskrcnn": "astrodask.train.maskrcnn_eval:evaluate_on_simulations",
    "evaluation_tables": "astrodask.train.reports:evaluation_tables",
    "write_evaluation": "astrodask.train.reports:write_evaluation",
    "store_evaluation": "astrodask.train.reports:store_evaluation",
    "Instances": "astrodask.models.detections:Instances",
    "evaluate_detections": "astrodask.evaluate:evaluate_detections",
    "confusion_matrix": "astrodask.evaluate:confusion_matrix",
    "evaluation_report": "astrodask.evaluate:evaluation_report",
    "sep_detect": "astrodask.baselines.sep_baseline:sep_detect",
    "run_demo": "astrodask.demo:demo",
    "DemoResult": "astrodask.demo:DemoResult",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name):
    try:
        target = _API[name]
    except KeyError:
        raise AttributeError(f"module 'astrodask' has no attribute {name!r}") from None
    module_name, attr = target.split(":")
    value = getattr(import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__():
    return __all__
