"""tools/profile_runtimes.py: one network profiled kernel by kernel in Paddle Inference (oneDNN's verbose log),
ONNX Runtime (its profiler) and OpenVINO (its performance counters)."""
import os
import subprocess
import sys

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, 'tools'))
import profile_runtimes  # noqa: E402

TOOL = os.path.join(REPO, 'tools', 'profile_runtimes.py')


def test_onednn_primitives_are_those_of_the_last_run():
    mark = profile_runtimes.MARK
    log = '\n'.join([
        f'{mark} 0',
        'onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core,forward_inference,src:f32,,,'
        'mb1_ic3oc8,9.5',
        f'{mark} 1',
        'onednn_verbose,v1,primitive,create:cache_miss,cpu,reorder,jit:uni,undef,src:f32,,,1x8x4x4,0.1',
        'onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core,forward_inference,src:f32,,,'
        'mb1_ic3oc8,1.5',
        'onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32 dst:f32,,,1x8x4x4,0.25',
        'onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32 dst:f32,,,1x8x2x2,0.5',
        f'{mark} end'])
    prims = profile_runtimes.onednn_primitives(log)
    assert prims == [(1.5, 'convolution', 'brg_conv_fwd:avx512_core', 'mb1_ic3oc8'),
                     (0.25, 'reorder', 'jit:uni', '1x8x4x4'), (0.5, 'reorder', 'jit:uni', '1x8x2x2')]
    assert profile_runtimes._summary(prims) == [['convolution brg_conv_fwd:avx512_core', 1.5, 1],
                                                ['reorder jit:uni', 0.75, 2]]


def test_profiles_a_config_in_the_three_runtimes(tmp_path):
    page = tmp_path / 'profiles.md'
    result = subprocess.run([sys.executable, TOOL, '--configs', 'configs/quickstart.yml', '--size', '64', '64',
                             '--runs', '2', '--markdown', str(page)], capture_output=True, text=True, timeout=600,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr
    text = page.read_text()
    assert text.startswith('# Where the time goes') and '## `configs/quickstart.yml`' in text
    lines = text.splitlines()
    table = lines.index('| paddle_onednn | ms | n | onnxruntime | ms | n | openvino | ms | n |')
    rows = [line.split(' | ') for line in lines[table + 2:table + 2 + profile_runtimes.TOP]]
    paddle_kinds = [row[0].lstrip('| ') for row in rows if row[0].lstrip('| ')]
    assert any(k.startswith('convolution ') for k in paddle_kinds), paddle_kinds
    assert 'outside oneDNN (Paddle kernels, executor)' in paddle_kinds
    assert any(row[3] in ('Conv', 'FusedConv') for row in rows), rows
    assert any(row[6].startswith('Convolution ') for row in rows), rows
    assert '| ms | primitive | implementation | shapes |' in lines


def test_bad_arguments_are_one_line():
    for argv, message in ((['--runs', '1'], 'error: --runs must be at least 2'),
                          (['--configs', 'configs/none.yml'], 'error: --configs: configs/none.yml does not exist')):
        result = subprocess.run([sys.executable, TOOL, *argv], capture_output=True, text=True, timeout=120, cwd=REPO)
        assert result.returncode == 2 and result.stderr.startswith(message), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_the_parts_of_each_runtime_add_up_to_the_gap():
    result = {
        'paddle_onednn': {'run_ms': 20.0, 'kinds': [['convolution brgconv_1x1:avx512_core', 8.0, 3],
                                                     ['reorder jit:uni', 3.0, 5], ['concat simple:any', 1.0, 1],
                                                     ['outside oneDNN (Paddle kernels, executor)', 8.0, 0]]},
        'onnxruntime': {'run_ms': 16.0, 'kinds': [['Conv', 9.0, 3], ['Transpose', 2.0, 2], ['Concat', 1.0, 1],
                                                  ['outside kernels', 4.0, 0]]},
        'openvino': {'run_ms': 12.0, 'kinds': [['Convolution brgconv_avx512_1x1_f32', 7.0, 3],
                                               ['Reorder reorder_jit', 1.5, 1], ['Concat ref_f32', 0.5, 1]]}}
    assert profile_runtimes.parts('paddle_onednn', result['paddle_onednn']) == {
        'compute': 8.0, 'copies': 3.0, 'concat': 1.0, 'outside': 8.0}
    assert profile_runtimes.parts('onnxruntime', result['onnxruntime']) == {
        'compute': 9.0, 'copies': 2.0, 'concat': 1.0, 'outside': 4.0}
    row = profile_runtimes.gap_row('configs/x.yml', result)
    assert row['best'] == 'openvino' and row['gap_ms'] == 8.0
    assert row['other'] == {'compute': 7.0, 'copies': 1.5, 'concat': 0.5, 'outside': 3.0}
    assert row['diff'] == {'compute': 1.0, 'copies': 1.5, 'concat': 0.5, 'outside': 5.0}
    assert sum(row['diff'].values()) == row['gap_ms']
    table = profile_runtimes.format_summary([row]).splitlines()
    assert table[2] == ('| `configs/x.yml` | 20.0 | openvino | 12.0 | 1.67 | +1.0 (8.0 - 7.0) | +1.5 (3.0 - 1.5) | '
                        '+0.5 (1.0 - 0.5) | +5.0 (8.0 - 3.0) |')
