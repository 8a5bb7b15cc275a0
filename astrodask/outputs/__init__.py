"""Writers of the final products: Parquet catalogs, FITS maps, images, summaries."""
