set -u
python3 -c "import transformers,torch,onnx,onnxruntime,PIL,tokenizers;print('versions',transformers.__version__,torch.__version__,onnx.__version__,onnxruntime.__version__,PIL.__version__,tokenizers.__version__)"
T=$(python3 -c "import transformers,os;print(os.path.dirname(transformers.__file__))")
(cd $T && tar czf $OUT/hf_src.tgz --ignore-failed-read models/florence2 generation/utils.py generation/logits_process.py generation/configuration_utils.py generation/beam_search.py generation/stopping_criteria.py models/clip image_transforms.py image_processing_utils.py image_utils.py models/bart tokenization_utils_base.py tokenization_utils_fast.py tokenization_utils_tokenizers.py cache_utils.py 2>&1 | tail -3)
mkdir -p /tmp/fx
python3 scripts/python/make_fixtures.py --out /tmp/fx/tiny-seed0 > /tmp/fx/log0.txt 2>&1; echo "rc=$?"; tail -40 /tmp/fx/log0.txt
cp /tmp/fx/log0.txt $OUT/log0.txt
[ -d /tmp/fx/tiny-seed0 ] && tar czf $OUT/tiny-seed0.tgz -C /tmp/fx tiny-seed0 && du -sh /tmp/fx/tiny-seed0 /tmp/fx/tiny-seed0/onnx && ls -la /tmp/fx/tiny-seed0/onnx
T=$(python3 -c "import transformers,os;print(os.path.dirname(transformers.__file__))")
(cd $T && tar czf $OUT/hf_src2.tgz --ignore-failed-read image_processing_backends.py models/auto/image_processing_auto.py models/auto/processing_auto.py processing_utils.py generation/candidate_generator.py 2>&1 | tail -1)
